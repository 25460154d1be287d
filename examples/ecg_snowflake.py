"""The seed notebook, end to end with medbatch: Kaggle ECGs → stage → run_batch → evaluation.

    python examples/ecg_snowflake.py --connection my_conn --model MEDGEMMA_4B_IT_TEST \\
        --version V_2026_02_06__15_25_17
    python examples/ecg_snowflake.py --offline      # synthetic ECGs + fake Snowflake

Needs the snowflake extra, even offline (the fake wraps snowpark's own classes):
`pip install "medbatch[snowflake]"`. `--dry-run` is the same as `--offline`.

What changed from the notebook: one PUT per class folder instead of one per image (and none
on a re-run), answers parsed from `choices` (the notebook parsed the `id` column), the job
is waited on (with its logs on failure), `max_completion_tokens` instead of the
`max_tokens` the stock signature rejects, greedy decoding, and a seeded per-class sample.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    import snowflake.snowpark  # noqa: F401 - checked first, for a one-line answer
except ImportError:
    sys.exit('ecg_snowflake.py needs the snowflake extra: pip install "medbatch[snowflake]"')

import medbatch
from medbatch.datasets.stage import SnowflakeStageDataset
from medbatch.pipeline import classify
from medbatch.records import GenerationParams
from medbatch.runners.snowflake import SnowflakeBatchRunner
from medbatch.snowflake.identifiers import StageLocation
from medbatch.snowflake.stage import StageUploader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--offline", "--dry-run", dest="dry_run", action="store_true",
        help="offline, against the fake Snowflake",
    )  # fmt: skip
    parser.add_argument("--connection", default=None, help="connections.toml entry")
    parser.add_argument("--database", default="MEDGEMMA_DEMO")
    parser.add_argument("--schema", default="PUBLIC")
    parser.add_argument("--model", default="MEDGEMMA_4B_IT_TEST")
    parser.add_argument("--version", default="V_2026_02_06__15_25_17")
    parser.add_argument("--compute-pool", default="MEDGEMMA_COMPUTE_POOL")
    parser.add_argument("--per-class", type=int, default=25, help="images per class")
    parser.add_argument("--run-dir", default="runs/ecg_snowflake")
    args = parser.parse_args()

    task = medbatch.get_task("ecg")
    extra: dict[str, Any] = {}
    if args.dry_run:
        from medbatch.datasets.synthetic import write_synthetic_ecg_dataset
        from medbatch.testing.snowflake import FakeSnowflake

        def answer(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
            # A stand-in model that reads the class folder from the stage path.
            url = str(messages[-1]["content"][-1]["image_url"]["url"])
            label = next((v for k, v in task.folder_map.items() if f"/{k}/" in url), "NORMAL")
            return f"Systematic analysis ...\n\nFINAL CLASSIFICATION: {label}"

        fake = FakeSnowflake(answer=answer)
        session: Any = fake.session
        extra = {
            "model_version": fake.model_version,
            "job_getter": fake.get_job,
            "sleep": lambda s: None,
        }
        root = write_synthetic_ecg_dataset(Path(tempfile.mkdtemp()) / "ecg", n=4 * args.per_class)
    else:
        import kagglehub

        from medbatch.snowflake.session import get_session

        session = get_session(connection_name=args.connection)
        root = Path(kagglehub.dataset_download("evilspirit05/ecg-analysis"))

    location = StageLocation(f"{args.database}.{args.schema}.ECG_STAGE", "ecg")
    uploader = StageUploader(session, location, parallel=16)
    uploader.ensure_stage()
    report = uploader.upload_tree(root, suffixes={".jpg", ".jpeg", ".png"})
    print(f"stage: {report.uploaded} uploaded in {report.put_calls} PUTs, {report.skipped} there")

    dataset = SnowflakeStageDataset(
        session, location, folder_map=task.folder_map, labels=task.labels
    ).sample(args.per_class, seed=0)
    runner = SnowflakeBatchRunner(
        session=session,
        database=args.database,
        schema_name=args.schema,
        model=args.model,
        version=args.version,
        compute_pool=args.compute_pool,
        output_stage="ECG_BATCH_OUTPUT_STAGE",
        **extra,
    )
    result = classify(
        dataset,
        task,
        runner,
        store=args.run_dir,
        params=GenerationParams(max_tokens=1024),
        canary=0,  # a canary would be a second Snowflake job (minutes of pool start-up)
    )
    print(result.metrics)


if __name__ == "__main__":
    main()
