"""HTML building blocks of the self-contained pages (:mod:`mambaseg.apps.report`, the benchmark page): the inline CSS
and table-sorting script, cell formatting and sortable tables (every cell carries ``data-v``, its raw value)."""

from __future__ import annotations

import html
import math

__all__ = ["CSS", "JS", "Cell", "esc", "html_table", "img_tag", "to_float"]

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}table.sortable th{cursor:pointer}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}tr.ours td{font-weight:bold;background:#eef6ee}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.85em}img{max-width:100%}.note{color:#666;font-size:.9em}
.legend span{display:inline-block;padding:0 8px;margin-right:6px;color:#fff}details.full{margin:4px 0 18px}
details.full summary{cursor:pointer;color:#1a5fb4}details.full div{overflow:auto;max-height:90vh}
details.full img{max-width:none;image-rendering:pixelated;margin:4px 8px 0 0;vertical-align:top}"""

JS = """(function(){
function key(td){var v=td.getAttribute('data-v');var n=parseFloat(v);return isNaN(n)?null:n;}
function sortTable(t,i,desc){var tb=t.tBodies[0];var rows=Array.prototype.slice.call(tb.rows);
 rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
  if(x===null&&y===null){var s=a.cells[i].textContent.localeCompare(b.cells[i].textContent);return desc?-s:s;}
  if(x===null)return 1;if(y===null)return -1;return desc?y-x:x-y;});
 rows.forEach(function(r){tb.appendChild(r);});
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(c,j){c.className=j===i?(desc?'desc':'asc'):'';});}
var tables=document.querySelectorAll('table.sortable');
Array.prototype.forEach.call(tables,function(t){
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.setAttribute('data-sortable','1');
  th.title='click to sort';th.addEventListener('click',function(){sortTable(t,i,th.className==='asc');});});});
var m=/sort=([A-Za-z0-9_-]+):(\\d+)(:desc)?/.exec(location.hash||'');
if(m){var t=document.getElementById(m[1]);if(t)sortTable(t,parseInt(m[2],10),!!m[3]);}
document.body.setAttribute('data-ready','1');})();"""


def esc(x) -> str:
    return html.escape(str(x))


def to_float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


class Cell:
    """A table cell whose shown text differs from its value (``data-v``, used for sorting)."""

    __slots__ = ("text", "value")

    def __init__(self, text: str, value) -> None:
        self.text, self.value = text, value


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):  # already formatted (e.g. "95.61"): shown as it is
        return esc(v)
    f = to_float(v)
    if f is None:
        return "n/a" if isinstance(v, float) else esc(v)
    return f"{f:.4f}" if abs(f) < 1000 else f"{f:.1f}"


def html_table(headers, rows, table_id: str | None = None, sortable: bool = False, row_classes=None) -> str:
    """HTML table; every cell carries ``data-v`` (its raw value) for the sort script."""
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    out = [f"<table{attrs}><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for v in r:
            if isinstance(v, Cell):
                f = to_float(v.value)
                dv = repr(f) if f is not None else ("" if v.value is None else str(v.value))
                cells.append(f'<td data-v="{esc(dv)}">{esc(v.text)}</td>')
                continue
            f = to_float(v) if not isinstance(v, str) else None
            dv = repr(f) if f is not None else ("" if isinstance(v, float) else str(v))
            cells.append(f'<td data-v="{esc(dv)}">{_fmt(v)}</td>')
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def img_tag(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'
