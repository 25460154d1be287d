"""`SnowflakeBatchRunnerConfig`: the settings of `SnowflakeBatchRunner`.

Holds the pydantic model of the `[runner] kind = "snowflake"` table, nothing else; it is
re-exported by `medbatch.runners.snowflake`, its public home. It imports only pydantic and
`medbatch.runners.base`: never the runner, `medbatch.snowflake`, Snowpark or another runner.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medbatch.runners.base import RunnerConfig

__all__ = ["SnowflakeBatchRunnerConfig"]


class SnowflakeBatchRunnerConfig(RunnerConfig):
    """Settings of `SnowflakeBatchRunner` (`[runner] kind = "snowflake"`).

    Defaults suit a 4B vision-language model (MedGemma 4B) on one GPU per replica.
    """

    database: str = Field(description="Database of the model registry and the stages.")
    schema_name: str = Field(default="PUBLIC", description="Schema of the registry and stages.")
    model: str = Field(description="Registered model name, e.g. MEDGEMMA_4B_IT.")
    version: str = Field(description="Model version name.")
    compute_pool: str = Field(description="GPU compute pool that runs the job.")
    connection_name: str | None = Field(
        default=None, description="Connection in ~/.snowflake/connections.toml (else env/notebook)."
    )
    function_name: str | None = Field(
        default=None, description="Model function to call; needed only if it has several."
    )
    image_stage: str = Field(
        default="MEDBATCH_IMAGES", description="Stage that local images are uploaded to."
    )
    image_path: str = Field(default="images", description="Folder for uploads in image_stage.")
    output_stage: str = Field(default="MEDBATCH_OUTPUT", description="Stage for job output.")
    output_path: str = Field(
        default="results",
        description="Folder for results in output_stage (letters, digits, _ - . / only); "
        "each job writes under its own <output_path>/<job name>/.",
    )
    create_stages: bool = Field(
        default=True, description="CREATE STAGE IF NOT EXISTS (SSE, directory table) at start."
    )
    gpus_per_replica: int | None = Field(
        default=1, ge=0, description="GPUs per job node; None or 0 runs on CPU."
    )
    replicas: int = Field(default=1, ge=1, description="Job nodes working in parallel.")
    num_workers: int | None = Field(
        default=1, ge=1, description="Inference workers per node (1 per GPU for vLLM)."
    )
    max_batch_rows: int | None = Field(
        default=64, ge=1, description="Rows per inference batch handed to the engine."
    )
    cpu_requests: str | None = Field(default=None, description="CPU per node, e.g. '8'.")
    memory_requests: str | None = Field(default=None, description="Memory per node, e.g. '32Gi'.")
    warehouse: str | None = Field(
        default=None, description="Warehouse for the input copy (1.x only; else the session's)."
    )
    engine: Literal["vllm"] | None = Field(
        default="vllm", description="Inference engine; None uses the model's default server."
    )
    engine_args: tuple[str, ...] = Field(
        default=("--max-model-len=8192", "--gpu-memory-utilization=0.9"),
        description="Extra vLLM arguments (prompt + one image + 1k answer fit 8k tokens).",
    )
    upload_parallel: int = Field(default=8, ge=1, le=99, description="Threads per PUT.")
    chunk_rows: int = Field(
        default=20_000, ge=1, description="Input rows sent per chunk when building the table."
    )
    max_records_per_job: int | None = Field(
        default=None, ge=1, description="Split larger runs into several jobs (None: one job)."
    )
    poll_interval_s: float = Field(default=15.0, gt=0, description="Seconds between polls.")
    timeout_s: float | None = Field(
        default=6 * 3600.0, gt=0, description="Cancel the job after this long (None: never)."
    )
    log_tail_lines: int = Field(default=60, ge=1, description="Log lines shown on failure.")
    detach_on_interrupt: bool = Field(
        default=False,
        description="On Ctrl-C leave the job running (resume re-attaches) instead of cancelling.",
    )
    progress: bool = Field(default=True, description="Show a live job-status line.")
