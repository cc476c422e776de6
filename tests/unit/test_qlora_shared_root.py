"""A recipe whose base_model is a shared QLoRA folder (the hub folder's predict.yml): an adapter whose
base model is missing is a clear error naming its adapter_config.json, before any model is loaded."""

import json

import pytest
import torch


def test_shared_adapter_with_a_missing_base_is_a_clear_error(tmp_path):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.errors import InputError
    from axolotl_decselfmask.stage2 import quantized

    folder = tmp_path / "hub"
    folder.mkdir()
    missing = tmp_path / "gone" / "base-model"
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(missing),
                                                            "peft_type": "LORA"}))
    cfg = DictDefault(base_model=str(folder), adapter="qlora", load_in_4bit=True)
    with pytest.raises(InputError, match=r"hub/adapter_config\.json names the base model .*gone/base-model"):
        quantized.load_start(cfg, str(folder), torch.float32)
