"""LabelConstraint → each back-end's native constrained decoding, checked against real shapes."""

from __future__ import annotations

import json
import random

import pytest

from medbatch.constraints import (
    LabelTrie,
    choice_json_schema,
    to_openai_response_format,
    to_snowflake_response_format,
    to_vllm_server_extra_body,
    to_vllm_structured_outputs,
)
from medbatch.parsing.json import JSONLabelParser
from medbatch.records import LabelConstraint
from medbatch.tasks.ecg import ECG_LABELS

NAMES = ECG_LABELS.names
CHOICE = LabelConstraint(labels=NAMES)
JSON_REASONING = LabelConstraint(labels=NAMES, mode="json", reasoning=True)


def test_vllm_offline_kwargs() -> None:
    # vLLM >= 0.11: StructuredOutputsParams(json=..., regex=..., choice=..., grammar=...)
    assert to_vllm_structured_outputs(CHOICE) == {"choice": list(NAMES)}
    kwargs = to_vllm_structured_outputs(JSON_REASONING)
    assert set(kwargs) == {"json"}
    assert list(kwargs["json"]["properties"]) == ["reasoning", "label"]  # reasoning first


def test_vllm_offline_real_params() -> None:
    sampling = pytest.importorskip("vllm.sampling_params")
    from medbatch.constraints import to_vllm_sampling_structured_outputs

    params = to_vllm_sampling_structured_outputs(CHOICE)
    assert isinstance(params, sampling.StructuredOutputsParams)
    assert params.choice == list(NAMES)
    full = sampling.SamplingParams(max_tokens=8, structured_outputs=params)
    assert full.structured_outputs is params


def test_vllm_server_uses_structured_outputs_not_guided_choice() -> None:
    body = to_vllm_server_extra_body(CHOICE)
    assert body == {"structured_outputs": {"choice": list(NAMES)}}
    assert "guided_choice" not in json.dumps(body)  # ignored silently by vLLM >= 0.12
    assert to_vllm_server_extra_body(JSON_REASONING)["structured_outputs"]["json"] == (
        JSON_REASONING.json_schema()
    )


@pytest.mark.parametrize("constraint", [CHOICE, JSON_REASONING])
def test_openai_response_format_is_a_strict_json_schema(constraint: LabelConstraint) -> None:
    fmt = to_openai_response_format(constraint)
    assert fmt["type"] == "json_schema"
    assert set(fmt["json_schema"]) == {"name", "schema", "strict"}
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    # OpenAI strict mode: every property required, no additional properties.
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["properties"]["label"] == {"type": "string", "enum": list(NAMES)}
    assert json.loads(json.dumps(fmt)) == fmt


def test_choice_schema_answers_are_read_by_the_json_parser() -> None:
    schema = choice_json_schema(CHOICE)
    assert list(schema["properties"]) == ["label"]
    answer = json.dumps({"label": "POST_MI"})
    assert JSONLabelParser(ECG_LABELS).parse(answer).label == "POST_MI"


def test_snowflake_flavours() -> None:
    assert to_snowflake_response_format(CHOICE) == to_openai_response_format(CHOICE)
    cortex = to_snowflake_response_format(JSON_REASONING, flavor="cortex")
    assert cortex == {"type": "json", "schema": JSON_REASONING.json_schema()}


# --- LabelTrie with a real tokenizer trained offline --------------------------------------


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = ["the ECG shows NORMAL rhythm", "POST MI and post infarction", "ABNORMAL beats"] * 20
    bpe.train_from_iterator(texts, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


def test_trie_covers_both_spellings_and_allows_eos_only_after_a_label(tokenizer) -> None:  # type: ignore[no-untyped-def]
    trie = LabelTrie.from_tokenizer(tokenizer, NAMES)
    eos = tokenizer.eos_token_id
    assert trie.eos_token_ids == (eos,)
    for label in NAMES:
        plain = tokenizer.encode(label, add_special_tokens=False)
        spaced = tokenizer.encode(" " + label, add_special_tokens=False)
        assert plain != spaced  # byte-level BPE: the leading space is its own token/merge
        for ids in (plain, spaced):
            for cut in range(len(ids)):
                allowed = trie.allowed(ids[:cut])
                assert ids[cut] in allowed
                assert eos not in allowed or trie.label_of(ids[:cut]) is not None
            assert eos in trie.allowed(ids)
            assert trie.label_of([*ids, eos]) == label
    assert trie.allowed([tokenizer.encode("zzz", add_special_tokens=False)[0]]) == [eos]


def test_constrained_random_decoding_always_yields_a_label(tokenizer) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    trie = LabelTrie.from_tokenizer(tokenizer, NAMES)
    prompt = tokenizer.encode("Classify the ECG:", add_special_tokens=False)
    allowed_fn = trie.prefix_allowed_tokens_fn(len(prompt))
    rng = random.Random(0)
    for _ in range(50):
        ids = list(prompt)
        for _step in range(trie.max_length + 1):
            allowed = allowed_fn(0, torch.tensor(ids))
            ids.append(rng.choice(allowed))
            if ids[-1] == tokenizer.eos_token_id:
                break
        generated = ids[len(prompt) :]
        label = trie.label_of(generated)
        assert label in NAMES
        assert tokenizer.decode(generated, skip_special_tokens=True).strip() == label


def test_trie_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="EOS"):
        LabelTrie({"A": [[1]]}, [])
    with pytest.raises(ValueError, match="same tokens"):
        LabelTrie({"A": [[1, 2]], "B": [[1, 2]]}, [0])
    with pytest.raises(ValueError, match="no token sequence"):
        LabelTrie({"A": [[]]}, [0])


def test_trie_with_label_that_is_a_prefix_of_another() -> None:
    trie = LabelTrie({"MI": [[5]], "MI_OLD": [[5, 6]]}, [0])
    assert sorted(trie.allowed([5])) == [0, 6]
    assert trie.label_of([5, 0]) == "MI"
    assert trie.label_of([5, 6]) == "MI_OLD"
    assert trie.allowed([5, 6, 0]) == [0]  # finished rows keep getting EOS
