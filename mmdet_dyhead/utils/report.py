"""Where a benchmark tool leaves its results: the measured numbers as JSON and the table drawn
from them as markdown, side by side, so the table can be redrawn from the JSON alone."""
import json
import os
import os.path as osp
from typing import Optional


def write_report(out: str, md: str, result: Optional[dict] = None, json_name: str = 'results.json',
                 md_name: str = 'table.md') -> str:
    """Writes ``md`` to OUT/md_name and, if given, ``result`` to OUT/json_name; prints and
    returns ``md``."""
    os.makedirs(out, exist_ok=True)
    if result is not None:
        with open(osp.join(out, json_name), 'w') as f:
            json.dump(result, f, indent=1)
    with open(osp.join(out, md_name), 'w') as f:
        f.write(md)
    print(md)
    return md
