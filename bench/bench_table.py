"""Reads the Markdown table `bench_train` prints (shared by the bench scripts)."""


def table_rows(out):
    """Every data row of the table in `out`, as a dict from header to cell."""
    rows, header = [], None
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "tokens/s" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[0] != "---":
            rows.append(dict(zip(header, cells)))
    return rows
