"""Classify ECGs through any OpenAI-compatible chat-completions server.

The same `OpenAICompatibleRunner` talks to `vllm serve`, OpenAI, Azure OpenAI, Ollama or LM
Studio: give it the server's `base_url` and the model name the server knows. The API key is
read from the environment variable named by `--api-key-env` (never from the command line).
Failed requests (429, 5xx, timeouts, malformed bodies) are retried with backoff; a record
that still fails becomes a `request_failed` row, and `--retry-failed` on a second run redoes
only those.

Against a real server, e.g. `vllm serve google/medgemma-4b-it --max-model-len 8192`:

    python examples/openai_server.py --data path/to/ecg --base-url http://127.0.0.1:8000/v1 \\
        --model google/medgemma-4b-it --structured-outputs vllm --constrained

Offline: a loopback test server (`medbatch.testing.openai_server`) that fails one request in
four with a 429, a 500 or a garbage body, and synthetic ECG pages:

    python examples/openai_server.py --offline --output-dir /tmp/openai-example
"""

from __future__ import annotations

import argparse
import hashlib
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import medbatch
from medbatch.runners.openai import OpenAICompatibleRunner


def offline_answer(body: dict[str, Any]) -> str:
    """The loopback server's answer: a label picked from the request's digest (random)."""
    labels = ("NORMAL", "ABNORMAL_HEARTBEAT", "MYOCARDIAL_INFARCTION", "POST_MI")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    return f"Rate 72, regular rhythm.\n\nFINAL CLASSIFICATION: {labels[digest[0] % 4]}"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ECG folder (Kaggle layout).")
    parser.add_argument("--base-url", help="e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="google/medgemma-4b-it")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument(
        "--structured-outputs", choices=("response_format", "vllm", "none"), default="none"
    )
    parser.add_argument("--constrained", action="store_true", help="Answers must be labels.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--retry-failed", action="store_true", help="Redo failed records.")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/ecg-openai"))
    parser.add_argument("--offline", action="store_true", help="Loopback server, fake ECGs.")
    args = parser.parse_args(argv)

    task = medbatch.get_task("ecg")
    settings: dict[str, Any] = {
        "model": args.model,
        "api_key_env": args.api_key_env,
        "structured_outputs": args.structured_outputs,
        "concurrency": args.concurrency,
    }
    with ExitStack() as stack:
        if args.offline:
            from medbatch.datasets.synthetic import SyntheticECGDataset
            from medbatch.testing.openai_server import OpenAITestServer

            server = stack.enter_context(
                OpenAITestServer(
                    offline_answer, fault_rate=0.25, faults=("429", "500", "garbage"), seed=3
                )
            )
            dataset: medbatch.Dataset = SyntheticECGDataset(8, seed=1, size=(553, 393))
            settings.update(base_url=server.base_url, api_key_env=None, backoff_initial_s=0.01,
                            jitter_s=0.0)  # fmt: skip
        else:
            if args.data is None or args.base_url is None:
                parser.error("--data and --base-url are required unless --offline")
            dataset = medbatch.ImageFolderDataset(args.data, task.folder_map, labels=task.labels)
            settings["base_url"] = args.base_url
        runner = OpenAICompatibleRunner(**settings)
        result = medbatch.classify(
            dataset,
            task,
            runner,
            store=args.output_dir,
            constrained=args.constrained,
            retry_failed=args.retry_failed,
        )
        if args.offline:
            print(f"loopback server outcomes: {dict(server.outcomes)}")
    counts = result.predictions["status"].value_counts().to_dict()
    print(f"{len(result.predictions)} records: {counts}; results in {result.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
