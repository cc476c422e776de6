"""The mask token: one token id that never occurs in text, the same in stage 1 and in the mask-fill prompt.

The authors' scripts replace each span by one reserved special token of the vocabulary (Llama 3:
``<|reserved_special_token_246|>``, its second-to-last added token). ``masking.mask_token: auto``
(the default) does the same for any tokenizer, by one rule that reads only the tokenizer
(:func:`choose_mask_token`):

1. the plugin's own added token, :data:`ADDED_MASK_TEXT`, when the tokenizer already has it (a
   stage-1 run added it: the tokenizer saved in ``output_dir``);
2. a **reserved** token: an added token that is special, is named reserved or unused
   (``reserved``, ``unused``, ``placeholder``, ``dummy`` in its text), is none of the named special
   tokens (bos, eos, pad, unk, sep, cls, mask) and does not appear in the chat template.

   - Llama 3 layout (``<|reserved_special_token_N|>``): the tokenizer's second-to-last added token
     (the authors' choice: ``<|reserved_special_token_246|>`` on Llama 3.1 and 3.2) when it is such
     a token, else the one with the highest id;
   - any other family (Gemma 2/3 ``<unusedN>``, Phi-3 ``<|placeholderN|>``, Phi-4 ``<|dummy_N|>``):
     the one with the lowest id (Gemma 3: ``<unused0>``), which tokens appended at the end of a
     later tokenizer version do not move;

3. else **added**: :data:`ADDED_MASK_TEXT` becomes a new special token (SmolLM2, Qwen2.5, Qwen3,
   Mistral). Its embedding row is the mean of the rows of every token before it (the model's
   vocabulary), in float32, cast to the weights' dtype; the output row likewise when the output
   embedding is not tied (:func:`prepare_model_for_mask`). Stage 1 trains that one row (PEFT's
   ``trainable_token_indices``, set by :func:`prepare_stage1_model`, which the plugin's
   ``pre_lora_load`` hook calls; a full fine-tune trains every row anyway).

A reserved row is left as the model has it, as in the authors' runs. The plugin arranges the
added path without recipe keys: :func:`arrange_recipe` (called on the raw recipe) appends the token
to Axolotl's ``special_tokens.additional_special_tokens``, so that every tokenizer Axolotl loads
has it, and Axolotl resizes the embeddings. An explicit ``masking.mask_token`` string keeps the
earlier behaviour: plain text, or one added token with ``masking.add_mask_token: true``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

AUTO = "auto"
#: the token added where the vocabulary has no reserved one
ADDED_MASK_TEXT = "<|decselfmask_mask|>"
ADDED_RULE = "a new special token (the vocabulary has no reserved or unused special token)"
#: the name of the model config attribute that records the initialised mask row
CONFIG_ATTR = "decselfmask_mask_token"

RESERVED_NAME = re.compile(r"reserved|unused|placeholder|dummy", re.IGNORECASE)
LLAMA3_RESERVED = re.compile(r"^<\|reserved_special_token_\d+\|>$")
NAMED_SPECIAL = ("bos", "eos", "pad", "unk", "sep", "cls", "mask")
#: stage1/pool.py's MASKED_RECONSTRUCTION_TYPE (pool.py imports this module)
POOL_TYPE = "axolotl_decselfmask.masked_reconstruction"


@dataclass(frozen=True)
class MaskToken:
    """The mask: its text, its token id and where it comes from.

    ``source``: ``reserved`` (a token of the vocabulary), ``added`` (:data:`ADDED_MASK_TEXT`, or an
    explicit string with ``add_mask_token``) or ``text`` (an explicit string used as plain text:
    several tokens, ``id`` None). ``id`` is None for an ``added`` token the tokenizer does not
    have yet. ``rule`` says in words why this token.
    """

    text: str
    id: int | None
    source: str
    rule: str

    @property
    def one_token(self) -> bool:
        return self.source != "text"


def _template_text(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "\n".join(template.values()) if isinstance(template, dict) else str(template)


def _named_special_ids(tokenizer) -> set[int]:
    ids = set()
    for name in NAMED_SPECIAL:
        if getattr(tokenizer, f"{name}_token", None) is not None:
            value = getattr(tokenizer, f"{name}_token_id", None)
            if isinstance(value, int):
                ids.add(value)
    return ids


def reserved_candidates(tokenizer) -> list[tuple[int, str]]:
    """(id, text) of the tokenizer's reserved or unused special tokens that may serve as the mask, by id."""
    named, template = _named_special_ids(tokenizer), _template_text(tokenizer)
    out = []
    for token_id, token in sorted(tokenizer.added_tokens_decoder.items()):
        text = str(token.content)
        if (getattr(token, "special", False) and RESERVED_NAME.search(text) and token_id not in named
                and text not in template):
            out.append((token_id, text))
    return out


def _reserved_choice(tokenizer) -> tuple[int, str, str] | None:
    candidates = reserved_candidates(tokenizer)
    if not candidates:
        return None
    if any(LLAMA3_RESERVED.match(text) for _, text in candidates):
        added = sorted(tokenizer.added_tokens_decoder)
        if len(added) >= 2 and added[-2] in dict(candidates):
            return added[-2], dict(candidates)[added[-2]], "the second-to-last added token (Llama 3 layout, the authors' choice)"
        token_id, text = candidates[-1]
        return token_id, text, "the highest reserved token (Llama 3 layout; the second-to-last added token is in use)"
    token_id, text = candidates[0]
    return token_id, text, "the lowest reserved or unused special token"


def _added_id(tokenizer, text: str) -> int | None:
    for token_id, token in tokenizer.added_tokens_decoder.items():
        if str(token.content) == text:
            return token_id
    return None


def add_to_tokenizer(tokenizer, text: str = ADDED_MASK_TEXT) -> int:
    """Add ``text`` as one special token (no-op when present); its id. The tokenizer's other extra
    special tokens stay as they are."""
    token_id = _added_id(tokenizer, text)
    if token_id is None:
        from tokenizers import AddedToken

        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(text, normalized=False, special=True)]},
                                     replace_extra_special_tokens=False)
        token_id = _added_id(tokenizer, text)
    return token_id


def choose_mask_token(tokenizer, add: bool = False) -> MaskToken:
    """The one-token mask of ``tokenizer`` (the module's rule). Reads only the tokenizer.

    ``add``: when the choice is the added token and the tokenizer lacks it, add it (then ``id`` is set).
    """
    token_id = _added_id(tokenizer, ADDED_MASK_TEXT)  # added before (by the recipe, or stage 1)
    if token_id is None:
        reserved = _reserved_choice(tokenizer)
        if reserved is not None:
            return MaskToken(reserved[1], reserved[0], "reserved", reserved[2])
        token_id = add_to_tokenizer(tokenizer) if add else None
    return MaskToken(ADDED_MASK_TEXT, token_id, "added", ADDED_RULE)


def mask_for(tokenizer, masking) -> MaskToken:
    """The mask of a ``masking`` block (:class:`~axolotl_decselfmask.args.MaskingConfig`): the chosen
    one for ``auto``, else the configured string (one added token with ``add_mask_token``)."""
    if masking.mask_token == AUTO:
        return choose_mask_token(tokenizer)
    if masking.add_mask_token:
        return MaskToken(masking.mask_token, _added_id(tokenizer, masking.mask_token), "added",
                         "masking.mask_token, added to the vocabulary (masking.add_mask_token)")
    return MaskToken(masking.mask_token, None, "text", "masking.mask_token, as plain text")


def resolve_mask_setting(tokenizer, config) -> MaskToken:
    """Replace ``masking.mask_token: auto`` of ``config`` by the chosen token's text (as
    ``relevance.dtype: auto`` is resolved), so that the examples, the cache keys and the manifest
    name the token itself. Returns the mask.

    An added token that ``tokenizer`` lacks is added to it: the recipe gives it to every tokenizer
    Axolotl loads (:func:`arrange_recipe`), and where that could not be done, the token gets the
    same id (the next one) in the stage-1 model (:func:`prepare_stage1_model`)."""
    was_auto = config.masking.mask_token == AUTO
    mask = choose_mask_token(tokenizer, add=True) if was_auto else mask_for(tokenizer, config.masking)
    if was_auto:
        config.masking.mask_token = mask.text
        LOG.info("decselfmask: mask token %r (id %s, %s: %s)", mask.text, mask.id, mask.source, mask.rule)
    return mask


# ------------------------------------------------------------------------------ the model


def _embedding_rows_mean(weight, n: int):
    import torch

    return weight[:n].to(torch.float32).mean(dim=0).to(weight.dtype)


def _resize(model, n: int, mean_resizing: bool, seed: int | None) -> None:
    """``resize_token_embeddings`` to ``n`` rows; with a ``seed``, the new rows drawn under it (the
    global RNG left as it was)."""
    import torch

    if seed is None:
        model.resize_token_embeddings(n, mean_resizing=mean_resizing)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.resize_token_embeddings(n, mean_resizing=mean_resizing)


def prepare_model_for_mask(model, tokenizer, mask: MaskToken, init: str = "mean", mean_resizing: bool = False,
                           seed: int | None = None) -> None:
    """Give ``model`` the mask's embedding row (idempotent).

    For an ``added`` mask: add it to ``tokenizer`` if missing, resize the embeddings if the model has
    no row for its id (``mean_resizing``, the new rows drawn under ``seed``), and with ``init``
    ``mean`` (``masking.mask_init``) set the row to the mean of the rows before it (float32 mean,
    the weights' dtype); the same for the output embedding when it is not tied (and its bias, if
    any). ``init`` ``model`` leaves the row as the resize (or the model) has it. The model's config
    records it (:data:`CONFIG_ATTR`), so a second call, or a model saved after the call (a full
    stage-1 fine-tune), is left alone. A ``reserved`` or ``text`` mask changes nothing.
    """
    if mask.source != "added":
        return
    import torch

    token_id = add_to_tokenizer(tokenizer, mask.text)
    record = {"text": mask.text, "id": token_id, **({} if init == "mean" else {"init": init})}
    if getattr(model.config, CONFIG_ATTR, None) == record:
        return
    embeddings = model.get_input_embeddings()
    if embeddings.weight.numel() == 0:  # partitioned (DeepSpeed ZeRO-3): the rows are not on this process
        LOG.warning("decselfmask: the embeddings are partitioned (ZeRO-3): the added mask token's row is left as "
                    "Axolotl's resize made it; set an explicit masking.mask_token to avoid an added token")
        return
    if embeddings.weight.shape[0] <= token_id:
        drawn = init != "mean"  # mean: the row is overwritten, the resize as it always was
        _resize(model, max(len(tokenizer), token_id + 1), mean_resizing and drawn, seed if drawn else None)
        embeddings = model.get_input_embeddings()
    if init != "mean":
        setattr(model.config, CONFIG_ATTR, record)
        return
    with torch.no_grad():
        weight = embeddings.weight
        weight[token_id] = _embedding_rows_mean(weight, token_id)
        output = model.get_output_embeddings()
        if output is not None and output.weight is not weight and output.weight.shape[0] > token_id:
            output.weight[token_id] = _embedding_rows_mean(output.weight, token_id)
            if getattr(output, "bias", None) is not None:
                output.bias[token_id] = output.bias[:token_id].to(torch.float32).mean().to(output.bias.dtype)
    setattr(model.config, CONFIG_ATTR, record)


def init_mask_row(config, model, tokenizer) -> bool:
    """:func:`prepare_model_for_mask` for the mask of ``config`` (a DecSelfMaskConfig) when it is the
    plugin's added token; True when it did."""
    if config.masking.mask_token not in (AUTO, ADDED_MASK_TEXT):
        return False
    mask = choose_mask_token(tokenizer)
    if mask.source != "added":
        return False
    prepare_model_for_mask(model, tokenizer, mask, config.masking.mask_init, seed=config.seed)
    return True


def _embedding_module_name(model) -> str:
    embeddings = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is embeddings:
            return name.rsplit(".", 1)[-1]
    return "embed_tokens"


def make_row_trainable(cfg, model, token_id: int) -> None:
    """Add ``token_id`` to the recipe's PEFT ``trainable_token_indices`` (Axolotl's
    ``peft_trainable_token_indices``), unless the embedding is trained whole."""
    if not cfg.get("adapter"):
        return  # a full fine-tune trains every row
    name = _embedding_module_name(model)
    if name in (cfg.get("lora_modules_to_save") or []):
        return
    current = cfg.get("peft_trainable_token_indices")
    if isinstance(current, dict):
        rows = list(current.get(name) or [])
        cfg["peft_trainable_token_indices"] = {**current, name: rows + ([token_id] if token_id not in rows else [])}
    elif isinstance(current, (list, tuple)) and current:
        # a list means "embed_tokens" to PEFT
        cfg["peft_trainable_token_indices"] = {name: sorted({*current, token_id})}
    else:
        cfg["peft_trainable_token_indices"] = {name: [token_id]}


def stage1_uses_mask(cfg, config) -> bool:
    datasets = cfg.get("datasets") or []
    return bool(config.stage1) and any(isinstance(d, dict) and d.get("type") == POOL_TYPE for d in datasets)


def stage2_uses_mask(config) -> bool:
    return bool(config.classification.enabled) and any(c.prompt == "mask_fill" for c in config.task_configs())


def prepare_stage1_model(cfg, model) -> None:
    """The plugin's ``pre_lora_load`` hook (after Axolotl resized the embeddings, before LoRA): the
    added mask's row initialised (:func:`prepare_model_for_mask`) and made trainable."""
    from axolotl_decselfmask.args import plugin_config

    config = plugin_config(cfg)
    if config.masking.mask_token != AUTO or not stage1_uses_mask(cfg, config):
        return
    from axolotl.loaders import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    mask = choose_mask_token(tokenizer, add=True)
    if mask.source != "added":
        return  # a reserved token: its row stays as the model has it
    init = config.masking.mask_init
    prepare_model_for_mask(model, tokenizer, mask, init, bool(cfg.get("mean_resizing_embeddings")), cfg.get("seed"))
    make_row_trainable(cfg, model, mask.id)
    LOG.info("decselfmask: mask token %r (id %d) added, its embedding row %s and trained", mask.text, mask.id,
             "set to the mean of the vocabulary's" if init == "mean" else "as the embedding resize gave it")


def _trained_rows(peft_config) -> set[int]:
    indices = getattr(peft_config, "trainable_token_indices", None)
    if isinstance(indices, dict):
        return {int(i) for rows in indices.values() for i in rows}
    return {int(i) for i in indices or []}


def _base_vocab(peft_config, trust_remote_code: bool = False) -> int | None:
    """The vocabulary size of the model the adapter is for, read from its config (None if unreadable)."""
    from transformers import AutoConfig

    source = getattr(peft_config, "base_model_name_or_path", None)
    if not source:
        return None
    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        return int(config.get_text_config().vocab_size)
    except Exception:  # noqa: BLE001 - unknown: PEFT's own rule then decides
        return None


def rows_rebuilt_at_load(model, mask_init: str = "mean", trust_remote_code: bool = False) -> str | None:
    """Why a PEFT ``model`` whose resized rows would be lost without the whole embedding, else None.

    Saving only the trained rows (PEFT's ``trainable_token_indices``) reproduces the model when every
    row added by the resize is a trained one (its value is in the adapter; loading resizes the base to
    the tokenizer saved with it, as stage 2 and ``AutoPeftModelForCausalLM`` do), and the output row
    of an untied output embedding is rebuilt as stage 1 started it (``mask_init: mean``, the mean of
    the rows before it: :func:`prepare_model_for_mask`)."""
    peft_config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    trained = _trained_rows(peft_config)
    if not trained:
        return "no trainable_token_indices"
    base = _base_vocab(peft_config, trust_remote_code)
    rows = int(model.config.get_text_config().vocab_size)
    if base is None:
        return "the base model's vocabulary size cannot be read"
    untrained = sorted(set(range(base, rows)) - trained)
    if untrained:
        return f"rows {untrained[:3]}{'...' if len(untrained) > 3 else ''} were added by the resize and are not trained"
    tied = bool(model.config.get_text_config().tie_word_embeddings)
    if rows > base and not tied and mask_init != "mean":
        return "the untied output row of the mask comes from the resize (masking.mask_init: model)"
    return None


def save_trained_rows_only(cfg, model) -> bool:
    """The plugin's ``post_lora_load`` hook: every adapter and checkpoint saved from ``model`` holds
    the trained rows of the embedding (the mask's), not the whole input and output matrices.

    PEFT's ``save_embedding_layers="auto"`` saves both whole matrices whenever the vocabulary was
    resized (an added mask token), though ``trainable_token_indices`` trained one row: a quarter to a
    half of a small model, gigabytes for a 150k vocabulary. Axolotl and the Trainer call
    ``save_pretrained`` without the argument, so the model's ``save_pretrained`` gets
    ``save_embedding_layers=False`` by default (a caller's explicit value wins), when
    :func:`rows_rebuilt_at_load` finds nothing lost. True when set."""
    from axolotl_decselfmask.args import plugin_config

    if not hasattr(model, "peft_config"):
        return False
    why = rows_rebuilt_at_load(model, plugin_config(cfg).masking.mask_init, bool(cfg.get("trust_remote_code")))
    if why is not None:
        if why != "no trainable_token_indices":
            LOG.info("decselfmask: adapters keep the whole embedding (%s)", why)
        return False
    save = model.save_pretrained

    def save_pretrained(*args, **kwargs):
        kwargs.setdefault("save_embedding_layers", False)
        return save(*args, **kwargs)

    model.save_pretrained = save_pretrained
    LOG.info("decselfmask: adapters and checkpoints hold the trained embedding rows %s, not the whole embedding",
             sorted(_trained_rows(model.peft_config[model.active_adapter])))
    return True


#: the folder (in output_dir) of the base model with the added mask's row, stage 2's base when stage 1 is off
BASE_WITH_MASK_DIR = "base_with_mask"
BASE_WITH_MASK_RECORD = "decselfmask_base_with_mask.json"


def base_with_mask(cfg, tokenizer, folder, dtype, mask_init: str = "mean", seed: int = 0) -> str | None:
    """With stage 1 off (the plain-SFT baseline in the mask-fill format): ``folder``, the recipe's
    ``base_model`` with the added mask's row initialised as stage 1 does it
    (:func:`prepare_model_for_mask`; ``mask_init`` ``model``: the row of the embedding resize, with
    the recipe's ``mean_resizing_embeddings`` as Axolotl's resize, drawn under ``seed``) and
    ``tokenizer`` (the token added), written once (a record keyed by the base model, the token,
    the dtype and, for ``model``, the resize settings). None when the mask is a reserved token: the
    base model is then stage 2's base as it is, whatever ``mask_init``."""
    from pathlib import Path

    from axolotl_decselfmask.io.files import atomic_write_json, fingerprint, read_json

    mask = choose_mask_token(tokenizer, add=True)
    if mask.source != "added":
        return None
    folder = Path(folder)
    mean_resizing = bool(cfg.get("mean_resizing_embeddings"))
    resize = () if mask_init == "mean" else (mask_init, mean_resizing, seed)  # mean: the key of before the key
    key = fingerprint(str(cfg.base_model), mask.text, mask.id, len(tokenizer), str(dtype), *resize)
    record = read_json(folder / BASE_WITH_MASK_RECORD)
    if isinstance(record, dict) and record.get("key") == key:
        return str(folder)
    from transformers import AutoModelForCausalLM

    (folder / BASE_WITH_MASK_RECORD).unlink(missing_ok=True)  # no record over half-written weights
    model = AutoModelForCausalLM.from_pretrained(str(cfg.base_model), dtype=dtype,
                                                 trust_remote_code=bool(cfg.trust_remote_code))
    prepare_model_for_mask(model, tokenizer, mask, mask_init, mean_resizing, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    atomic_write_json(folder / BASE_WITH_MASK_RECORD, {"key": key, "base_model": str(cfg.base_model),
                                                        "mask_token": mask.text, "mask_id": mask.id,
                                                        "mask_init": mask_init})
    return str(folder)


def describe(mask: MaskToken, stage1: bool = True, mask_init: str = "mean") -> str:
    """The mask in words, for the model card."""
    if mask.source == "text":
        return f"`{mask.text}` (plain text)"
    where = (f"id {mask.id}" if mask.id is not None else "one token")
    if mask.source == "reserved":
        return f"`{mask.text}` ({where}, a reserved token of the vocabulary: {mask.rule})"
    if mask.text == ADDED_MASK_TEXT:
        start = ("starts as the mean of the vocabulary's" if mask_init == "mean"
                 else "starts as the embedding resize gave it (masking.mask_init: model)")
        return (f"`{mask.text}` ({where}, added to the vocabulary; its embedding row {start}"
                + (" and is trained in stage 1)" if stage1 else ")"))
    return f"`{mask.text}` ({where}, added to the vocabulary)"


def describe_for_run(cfg, config) -> str:
    """:func:`describe` of a run's mask, its tokenizer read from ``output_dir`` (else the recipe's);
    never raises."""
    try:
        from pathlib import Path

        from transformers import AutoTokenizer

        out = Path(str(cfg.get("output_dir") or "."))
        source = out if (out / "tokenizer_config.json").is_file() else (cfg.get("tokenizer_config")
                                                                        or cfg.get("base_model"))
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=bool(cfg.get("trust_remote_code")))
        return describe(mask_for(tokenizer, config.masking), bool(config.stage1), config.masking.mask_init)
    except Exception:  # noqa: BLE001 - the card is written whatever happens
        return f"`{config.masking.mask_token}`"


# ------------------------------------------------------------------------------ the raw recipe


def _recipe_tokenizer(cfg: dict):
    source = cfg.get("tokenizer_config") or cfg.get("base_model")
    if not source:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=bool(cfg.get("trust_remote_code")))
    except Exception as exc:  # noqa: BLE001 - Axolotl reports a tokenizer it cannot load itself
        LOG.debug("decselfmask: no tokenizer from %s at start-up (%s)", source, exc)
        return None


def arrange_recipe(cfg: dict, config) -> MaskToken | None:
    """On the raw recipe: where ``masking.mask_token: auto`` is used (stage 1's pool, or a mask-fill
    prompt) and the tokenizer has no reserved token, append :data:`ADDED_MASK_TEXT` to Axolotl's
    ``special_tokens.additional_special_tokens`` (after the tokenizer's own extra special tokens,
    which Axolotl's call would otherwise drop from the list). Returns the mask, or None when the
    recipe does not use the automatic one or its tokenizer cannot be loaded."""
    if config.masking.mask_token != AUTO or not (stage1_uses_mask(cfg, config) or stage2_uses_mask(config)):
        return None
    tokenizer = _recipe_tokenizer(cfg)
    if tokenizer is None:
        return None
    mask = choose_mask_token(tokenizer)
    if mask.source == "added" and mask.id is None:
        special = dict(cfg.get("special_tokens") or {})
        extra = getattr(tokenizer, "extra_special_tokens", None) or []
        wanted = [str(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
        wanted += [str(t) for t in special.get("additional_special_tokens") or []] + [mask.text]
        special["additional_special_tokens"] = list(dict.fromkeys(wanted))
        cfg["special_tokens"] = special
    return mask
