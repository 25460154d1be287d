"""Stage upload round trips: medbatch's `StageUploader` vs the notebook's per-file PUT loop.

Run: `python benchmarks/stage_upload.py [-n 400] [-k 4] [--latency 0.05] [--quick]`

N small images in K class folders are uploaded to a stage of the fake Snowflake session
(`medbatch.testing.snowflake.FakeSession`, Snowpark local testing underneath), which counts
every `PUT`. Each `PUT` also sleeps `--latency` seconds, standing in for one client-server
round trip (Snowflake PUTs cost tens to hundreds of milliseconds each before any bytes move).

- **medbatch**: `StageUploader.upload_tree(root)`: one wildcard `PUT` per folder,
  content-addressed names, files already on the stage skipped (a second upload is timed too).
- **notebook** (baseline): the seed's loop, one `session.file.put(img, target,
  auto_compress=False, overwrite=False)` per file.

Target (issue #10): K calls instead of N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from medbatch.snowflake.identifiers import StageLocation
from medbatch.snowflake.stage import StageUploader
from medbatch.testing.snowflake import FakeSession

FOLDERS = (
    "normal_ecg_images",
    "abnormal_heartbeat_ecg_images",
    "myocardial_infarction_ecg_images",
    "post_mi_history_ecg_images",
)


def emit(figure: str, medbatch: float, baseline: float | None, unit: str, **extra: Any) -> None:
    """One machine-readable line for run_all.py (lower is better here)."""
    ratio = baseline / medbatch if baseline and medbatch else None
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": unit}
    print("BENCH " + json.dumps({**payload, "ratio": ratio, "lower_is_better": True, **extra}))


class _SlowFile:
    """`session.file` with a fixed round-trip time per PUT."""

    def __init__(self, inner: Any, latency_s: float) -> None:
        self.inner = inner
        self.latency_s = latency_s

    def put(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.latency_s)
        return self.inner.put(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_session(latency_s: float) -> FakeSession:
    """A fake session whose PUTs take `latency_s` each."""
    session = FakeSession()
    session.file = _SlowFile(session.file, latency_s)  # type: ignore[assignment]
    return session


def write_images(root: Path, n: int, k: int) -> None:
    """N distinct small files (JPEG magic + index) spread over K folders."""
    for i in range(n):
        folder = root / "ecg_data_new_version" / f"{FOLDERS[i % len(FOLDERS)]}_{i % k // 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ECG({i}).jpg").write_bytes(b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big") * 64)


def upload_medbatch(root: Path, latency_s: float) -> tuple[int, float, int, float]:
    """PUT calls and seconds for a first and a repeated upload of the tree."""
    session = make_session(latency_s)
    location = StageLocation.parse(f"@{session.database}.{session.schema}.ECG_STAGE")
    uploader = StageUploader(session, location, refresh_directory=False)
    uploader.ensure_stage()
    started = time.perf_counter()
    uploader.upload_tree(root)
    first_s = time.perf_counter() - started
    first_calls = session.calls["put"]
    started = time.perf_counter()
    uploader.upload_tree(root)  # nothing new: listed and skipped
    again_s = time.perf_counter() - started
    return first_calls, first_s, session.calls["put"] - first_calls, again_s


def upload_notebook(root: Path, latency_s: float) -> tuple[int, float]:
    """PUT calls and seconds for the seed notebook's loop over the same files."""
    session = make_session(latency_s)
    stage_path = f"@{session.database}.{session.schema}.ECG_STAGE"
    session.sql("CREATE STAGE IF NOT EXISTS ECG_STAGE DIRECTORY = (ENABLE = TRUE)").collect()
    all_images = sorted(str(p) for p in root.rglob("*.jpg"))
    started = time.perf_counter()
    uploaded = 0
    for img_path in all_images:
        rel_path = str(Path(img_path).relative_to(root))
        folder_name = str(Path(rel_path).parent)
        target = f"{stage_path}/{folder_name}" if folder_name else stage_path
        session.file.put(img_path, target, auto_compress=False, overwrite=False)
        uploaded += 1  # noqa: SIM113 - the notebook counts this way
    return session.calls["put"], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Upload with both and print calls and seconds side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=400, help="images")
    parser.add_argument("-k", type=int, default=4, help="folders (multiple of 4)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per PUT")
    parser.add_argument("--quick", action="store_true", help="n=100, k=4, latency 0.02 s")
    args = parser.parse_args(argv)
    n, k, latency = (100, 4, 0.02) if args.quick else (args.n, args.k, args.latency)
    with tempfile.TemporaryDirectory(prefix="medbatch-stage-") as tmp:
        root = Path(tmp) / "data"
        write_images(root, n, k)
        folders = len({p.parent for p in root.rglob("*.jpg")})
        ours_calls, ours_s, again_calls, again_s = upload_medbatch(root, latency)
        theirs_calls, theirs_s = upload_notebook(root, latency)
    print(f"stage upload, {n} images in {folders} folders, {latency * 1000:.0f} ms per PUT")
    print(f"{'':34}{'PUT calls':>10}{'seconds':>10}")
    print(f"{'medbatch StageUploader':34}{ours_calls:>10}{ours_s:>10.2f}")
    print(f"{'medbatch, second upload (no-op)':34}{again_calls:>10}{again_s:>10.2f}")
    print(f"{'notebook per-file loop':34}{theirs_calls:>10}{theirs_s:>10.2f}")
    print(
        f"calls: {theirs_calls}/{ours_calls} = {theirs_calls / max(ours_calls, 1):.0f}x fewer; "
        f"time: {theirs_s / ours_s:.1f}x faster; target K={folders} calls -> "
        f"{'meets' if ours_calls <= folders else 'MISSES'}"
    )
    emit(
        f"stage upload PUT calls ({n} images, {folders} folders)",
        ours_calls,
        theirs_calls,
        "PUT calls",
        target=f"K = {folders} calls",
        met=ours_calls <= folders,
    )
    emit(
        f"stage upload time ({latency * 1000:.0f} ms/PUT)",
        ours_s,
        theirs_s,
        "s",
        repeat_upload_calls=again_calls,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
