"""Reading and writing image files, one module per idea (issue 22):

- :mod:`~mambaseg.data.io.suffixes`: the one suffix registry (which suffixes are read, as raster, NIfTI or ITK);
- :mod:`~mambaseg.data.io.headers`: volume headers read and checked before any voxel is (untrusted input);
- :mod:`~mambaseg.data.io.raster`: 2D readers (Pillow, 2D NIfTI) -> ``(C, H, W)`` images, label maps, masks;
- :mod:`~mambaseg.data.io.volume`: 3D readers and the NIfTI writer that keep the geometry;
- :mod:`~mambaseg.data.io.readers`: any supported file, 2D or 3D by its header;
- :mod:`~mambaseg.data.io.synapse`: the Synapse (TransUNet) ``npz`` slices and ``h5`` volumes;
- :mod:`~mambaseg.data.io.png`: PNG output and prediction overlays.

Floors inside: ``suffixes`` < ``headers`` < ``raster``, ``volume``, ``synapse``, ``png`` < ``readers``. This file
imports nothing, so importing one module loads only what that module needs.
"""
