"""Files of example ids a user hands the audit: the target's members (`--members`), known non-members."""

from __future__ import annotations

from farm.errors import DataError
from farm.storage import RunDir


def read_member_ids(path: str, *, flag: str = "--members") -> tuple[int, ...]:
    """Example ids from a file: a Parquet file with an `example_id` column, or text with integers separated
    by whitespace or commas (`#` starts a comment). DataError naming the file and line otherwise."""
    run, name = RunDir(path.rsplit("/", 1)[0] if "/" in path else "."), path.rsplit("/", 1)[-1]
    if not run.is_file(name):
        raise DataError(f"{path}: file not found ({flag}: a file of example ids)")
    if name.endswith(".parquet"):
        table = run.read_table(name)
        if "example_id" not in table.column_names:
            raise DataError(f"{path}: no example_id column (columns: {', '.join(table.column_names)})")
        return tuple(int(v) for v in table["example_id"].to_pylist())
    ids = []
    for number, line in enumerate(run.read_text(name).splitlines(), 1):
        for word in line.split("#")[0].replace(",", " ").split():
            try:
                ids.append(int(word))
            except ValueError:
                raise DataError(f"{path}, line {number}: {word!r} is not an example id") from None
    return tuple(ids)
