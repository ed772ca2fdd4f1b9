"""mambaseg: Mamba (selective state-space) medical image segmentation that runs anywhere.

Layers (imports only point down): ``cli`` → ``engine`` / ``export`` / ``report`` → ``models`` → ``nn`` → ``ssm``;
``data`` and ``metrics`` know no models.
"""

__version__ = "0.1.0"
