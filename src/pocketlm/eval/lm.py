"""The model under evaluation, as lm-eval sees it.

A pocketlm checkpoint is a standard Hugging Face directory, so lm-eval's own HF model class (HFLM) runs it.
A GGUF file runs on pocketlm's engine (llama.cpp, through `pocketlm.runtime.engine`) behind `EngineLM`, a
small lm-eval `LM`: lm-eval's own llama.cpp backend talks to a llama.cpp *server* over HTTP, which an
offline user would have to start by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.checkpoint import is_checkpoint_dir
from pocketlm.model.config import ModelConfig
from pocketlm.runtime.engine import Runtime, load_runtime
from pocketlm.runtime.gguf import read_gguf


@dataclass
class ModelUnderTest:
    """What every task needs: the path, its kind, its config, and (for a GGUF) the source checkpoint whose
    tokenizer and intent.json it was exported from."""

    path: str
    kind: str  # "checkpoint" | "gguf"
    config: ModelConfig
    tokenizer: str | None = None
    threads: int | None = None
    _lm: Any = None

    @property
    def label(self) -> str:
        p = Path(self.path)
        return p.stem if self.kind == "gguf" else (p.name if p.name != "final" else f"{p.parent.name}/final")

    @property
    def params(self) -> int:
        return costs.param_groups(self.config)["total"]

    def lm(self):
        """The lm-eval LM for this model (loaded once)."""
        if self._lm is None:
            self._lm = hf_lm(self.path) if self.kind == "checkpoint" else EngineLM.for_gguf(self)
        return self._lm

    def close(self) -> None:
        if isinstance(self._lm, EngineLM):
            self._lm.runtime.close()
        self._lm = None


def open_model(path: str | os.PathLike, tokenizer: str | None = None, threads: int | None = None) -> ModelUnderTest:
    p = str(path)
    if p.endswith(".gguf"):
        if not os.path.isfile(p):
            raise UserError(f"GGUF file not found: {p}")
        cfg = read_gguf(p)["config"]
        if cfg is None:
            raise UserError(f"{p}: cannot read a llama/qwen2 config from its metadata")
        if tokenizer is not None and not is_checkpoint_dir(tokenizer):
            raise UserError(f"--tokenizer {tokenizer} is not a checkpoint directory")
        return ModelUnderTest(p, "gguf", cfg, tokenizer, threads)
    if not os.path.isdir(p) or not is_checkpoint_dir(p):
        raise UserError(f"{p} is neither a pocketlm checkpoint directory nor a .gguf file")
    return ModelUnderTest(p, "checkpoint", ModelConfig.from_file(Path(p) / "config.json"), None, threads)


def hf_lm(path: str):
    from lm_eval.models.huggingface import HFLM

    # float32 on CPU: bfloat16 matmuls are slower on most CPUs and the scores would differ from training's
    return HFLM(pretrained=path, device="cpu", dtype="float32", batch_size=1)


def _lm_base():
    from lm_eval.api.model import LM

    return LM


class EngineLM:
    """lm-eval's three request types on a pocketlm Runtime (batch 1, token by token after the context)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        specials = runtime.special_ids()
        if not specials:
            raise UserError("the model has no end-of-text token to start a rolling window with")
        self.prefix_token = specials[0]

    @classmethod
    def for_gguf(cls, model: ModelUnderTest):
        rt = load_runtime(model.path, backend="llamacpp", n_ctx=None, threads=model.threads,
                          tokenizer=model.tokenizer)
        lm = _as_lm(cls)(rt)
        return lm

    # lm-eval API -------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in _progress(requests, "loglikelihood", disable_tqdm):
            context, continuation = req.args
            whole = self.runtime.encode(context + continuation)
            ctx = self.runtime.encode(context) if context else []
            if whole[:len(ctx)] != ctx:  # the boundary merged into one token: encode the parts apart
                whole = ctx + self.runtime.encode(continuation)
            cont = whole[len(ctx):]
            ctx = ctx or [self.prefix_token]
            logprobs, greedy = self.runtime.score(ctx[-(self.runtime.n_ctx - len(cont)):], cont)
            out.append((sum(logprobs), greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for req in _progress(requests, "loglikelihood_rolling", disable_tqdm):
            ids = self.runtime.encode(req.args[0])
            total = 0.0
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    ids, self.prefix_token, self.runtime.n_ctx - 1, context_len=1)):
                total += sum(self.runtime.score(ctx, cont)[0])
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in _progress(requests, "generate_until", disable_tqdm):
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = self.runtime.encode(context)
            room = self.runtime.n_ctx - len(ids)
            text = ""
            for r in self.runtime.stream_generate(ids, max_new_tokens=min(int(kwargs.get("max_gen_toks", 256)), room),
                                                  stop_ids=self.runtime.special_ids()):
                text += r.text
                if any(u in text for u in until):
                    break
            for u in until:
                text = text.split(u)[0]
            out.append(text)
        return out


def _as_lm(cls):
    """EngineLM made a subclass of lm-eval's LM at first use (lm-eval is a heavy import)."""
    if not hasattr(_as_lm, "cls"):
        base = _lm_base()

        def init(self, runtime):
            base.__init__(self)
            cls.__init__(self, runtime)

        _as_lm.cls = type("EngineLM", (cls, base), {"__init__": init})
    return _as_lm.cls


def _progress(requests, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(requests, desc=desc, disable=disable or len(requests) < 2)


__all__ = ["EngineLM", "ModelUnderTest", "hf_lm", "open_model"]
