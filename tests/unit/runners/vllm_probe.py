"""Run medbatch's vLLM code against the real vLLM wheel's pure-Python modules; print JSON.

vLLM cannot be installed here (it pulls CUDA torch), and importing it patches torch and the
environment (`vllm.env_override`), so this runs in a subprocess of its own, with the wheel
unpacked by `scripts/fetch_vllm_wheel.sh` first on `PYTHONPATH`:

    PYTHONPATH=.cache/vllm/0.34.0:.cache/vllm/deps:src python tests/unit/runners/vllm_probe.py

`--snapshot` prints only the API facts `medbatch/testing/vllm_api.json` holds (the fake
engine's accepted keywords and exception tree); without it, the results of the checks too.
`vllm.entrypoints.llm` does not import without a GPU stack (xgrammar, tvm_ffi), so `LLM`'s
signatures are read from its source with `ast`.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any


def _signature_names(source: Path, class_name: str, method: str) -> list[str]:
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    args = item.args
                    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                    return [name for name in names if name != "self"]
    raise LookupError(f"{class_name}.{method} not found in {source}")


def snapshot() -> dict[str, Any]:
    """The API facts the fake engine is built from."""
    import vllm
    import vllm.exceptions
    import vllm.v1.engine.exceptions
    from vllm.engine.arg_utils import EngineArgs
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    root = Path(vllm.__file__).parent
    llm_source = root / "entrypoints" / "llm.py"
    tree: dict[str, str] = {}
    for module in (vllm.exceptions, vllm.v1.engine.exceptions):
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, vllm.exceptions.VLLMError)
                and value.__module__ == module.__name__
            ):
                tree[name] = value.__bases__[0].__name__
    tree["VLLMError"] = "Exception"
    return {
        "vllm_version": vllm.__version__,
        "engine_args": sorted(f.name for f in dataclasses.fields(EngineArgs)),
        "llm_init": sorted(_signature_names(llm_source, "LLM", "__init__")),
        "llm_chat": _signature_names(llm_source, "LLM", "chat"),
        "sampling_params": sorted(
            name for name in SamplingParams.__struct_fields__ if not name.startswith("_")
        ),
        "structured_outputs_params": [
            f.name
            for f in dataclasses.fields(StructuredOutputsParams)
            if not f.name.startswith("_")
        ],
        "exceptions": dict(sorted(tree.items())),
    }


def runner_checks() -> dict[str, Any]:
    """VLLMRunner on the fake engine, with vLLM's own SamplingParams and exceptions."""
    import vllm.exceptions
    import vllm.sampling_params

    from medbatch.records import ChatMessage, GenerationParams, LabelConstraint
    from medbatch.runners.vllm import VLLMRunner
    from medbatch.testing.contracts import make_request
    from medbatch.testing.fake_vllm import fake_vllm

    labels = ("NORMAL", "POST_MI")
    requests = [
        make_request("choice").model_copy(
            update={
                "constraint": LabelConstraint(labels=labels),
                "params": GenerationParams(max_tokens=16, logprobs=True, stop=("\n\n",)),
            }
        ),
        make_request("json").model_copy(
            update={"constraint": LabelConstraint(labels=labels, mode="json", reasoning=True)}
        ),
        make_request("poison").model_copy(
            update={"messages": (ChatMessage.text("user", "poison prompt"),)}
        ),
        make_request("free"),
    ]

    def poisoned(conversation: list[dict[str, Any]]) -> bool:
        return "poison" in str(conversation)

    with (
        fake_vllm(
            lambda conversation, params: "FINAL CLASSIFICATION: POST_MI",
            fail_on=poisoned,
            sampling_params=vllm.sampling_params,
            exceptions=vllm.exceptions,
        ) as fake,
        VLLMRunner(model="google/medgemma-4b-it", chunk_size=8) as runner,
    ):
        responses = {r.record_id: r for r in runner.run(requests)}
    params = fake.chat_calls[0].sampling_params
    choice, as_json = params[0], params[1]
    return {
        "params_types": sorted({f"{type(p).__module__}.{type(p).__name__}" for p in params}),
        "choice": {
            "structured_outputs_type": type(choice.structured_outputs).__module__,
            "choice": choice.structured_outputs.choice,
            "logprobs": choice.logprobs,
            "max_tokens": choice.max_tokens,
            "stop": choice.stop,
            "temperature": choice.temperature,
        },
        "json_schema": as_json.structured_outputs.json,
        "chat_calls": [len(call.conversations) for call in fake.chat_calls],
        "responses": {
            record_id: {
                "text": r.text,
                "error": r.error.model_dump(mode="json") if r.error else None,
                "label_scores": r.label_scores,
            }
            for record_id, r in responses.items()
        },
    }


def score_checks() -> dict[str, Any]:
    """Score mode with vLLM's own SamplingParams, and the fake's `prompt_logprobs` rebuilt
    with vLLM's own `create_prompt_logprobs` / `append_logprobs_for_next_position`."""
    import vllm.exceptions
    import vllm.logprobs
    import vllm.sampling_params

    from medbatch.records import LabelConstraint
    from medbatch.runners.vllm import VLLMRunner
    from medbatch.testing.contracts import make_request
    from medbatch.testing.fake_vllm import Logprob, fake_vllm

    labels = ("NORMAL", "POST_MI")
    request = make_request("score").model_copy(
        update={"constraint": LabelConstraint(labels=labels, mode="score")}
    )
    out: dict[str, Any] = {
        "logprob_fields": {
            "real": [f.name for f in dataclasses.fields(vllm.logprobs.Logprob)],
            "fake": [f.name for f in dataclasses.fields(Logprob)],
        }
    }
    with (
        fake_vllm(sampling_params=vllm.sampling_params, exceptions=vllm.exceptions) as fake,
        VLLMRunner(model="google/medgemma-4b-it") as runner,
    ):
        (response,) = runner.run([request])
        out["response"] = {"text": response.text, "label_scores": response.label_scores}
        out["params_types"] = sorted(
            {f"{type(p).__module__}.{type(p).__name__}" for p in fake.chat_calls[0].sampling_params}
        )
        llm = fake.module.LLM(model="m")
        conversation = [{"role": "user", "content": "Classify this ECG, please."}]
        shapes = {}
        for k in (0, 1, 3):
            params = vllm.sampling_params.SamplingParams(max_tokens=1, prompt_logprobs=k)
            (output,) = llm.chat([conversation], sampling_params=[params])
            fake_plp = output.prompt_logprobs
            real_plp = vllm.logprobs.create_prompt_logprobs(False)
            for position in range(1, len(output.prompt_token_ids)):
                step = fake_plp[position]
                actual = output.prompt_token_ids[position]
                top = sorted(
                    (item for item in step.items() if item[0] != actual or item[1].rank <= k),
                    key=lambda item: item[1].rank,
                )[:k]
                ids = [actual] + [token for token, _ in top]
                chosen = step[actual]
                vllm.logprobs.append_logprobs_for_next_position(
                    real_plp,
                    ids,
                    [chosen.logprob] + [lp.logprob for _, lp in top],
                    [chosen.decoded_token] + [lp.decoded_token for _, lp in top],
                    chosen.rank,
                    k,
                )

            def plain(plp: Any) -> list[Any]:
                return [
                    None
                    if step is None
                    else [(t, lp.logprob, lp.rank, lp.decoded_token) for t, lp in step.items()]
                    for step in plp
                ]

            shapes[str(k)] = {
                "fake": plain(fake_plp),
                "real": plain(real_plp),
                "tokens": len(output.prompt_token_ids),
                "sizes": [None if s is None else len(s) for s in fake_plp],
            }
        out["shapes"] = shapes
    return out


def server_checks() -> dict[str, Any]:
    """OpenAICompatibleRunner's request bodies, read by vLLM's own server request model."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from medbatch.records import GenerationParams, LabelConstraint
    from medbatch.runners.openai import OpenAICompatibleRunnerConfig, chat_completion_body
    from medbatch.testing.contracts import make_request

    labels = ("NORMAL", "POST_MI")
    out: dict[str, Any] = {}
    for style in ("vllm", "response_format"):
        for mode in ("choice", "json"):
            config = OpenAICompatibleRunnerConfig(
                base_url="http://127.0.0.1:8000/v1",
                model="google/medgemma-4b-it",
                structured_outputs=style,
                logprobs=True,
            )
            request = make_request("a").model_copy(
                update={
                    "constraint": LabelConstraint(labels=labels, mode=mode),
                    "params": GenerationParams(max_tokens=32, seed=3, stop=("\n\n",)),
                }
            )
            parsed = ChatCompletionRequest.model_validate(chat_completion_body(request, config))
            sampling = parsed.to_sampling_params(max_tokens=32, default_sampling_params={})
            structured = sampling.structured_outputs
            out[f"{style}/{mode}"] = {
                "extra_fields": sorted(parsed.model_extra or {}),
                "choice": structured.choice if structured else None,
                "json": structured.json if structured else None,
                "logprobs": sampling.logprobs,
                "max_tokens": sampling.max_tokens,
                "seed": sampling.seed,
                "stop": sampling.stop,
                "image_parts": [
                    part["type"]
                    for message in parsed.messages
                    for part in (message.get("content") or [])
                    if isinstance(part, dict)
                ],
            }
    return out


def main(argv: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result: dict[str, Any] = {"snapshot": snapshot()}
        if "--snapshot" in argv:
            print(json.dumps(result["snapshot"], indent=1))
            return
        result["runner"] = runner_checks()
        result["server"] = server_checks()
        result["score"] = score_checks()
    print("VLLM_PROBE_RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
