"""Android intent invocation (DroidCall): function specs, code_short prompts, the call parser,
DroidCall's metrics, a synthetic data generator and the adb mapping.

    from pocketlm.intent import load_specs, synthesize, to_sft_records, evaluate
"""

from pocketlm.intent.android import INTENTS, AndroidIntent, to_adb, to_adb_argv
from pocketlm.intent.infer import load_runner, predict, run_query
from pocketlm.intent.metrics import (EmbeddingMatcher, LexicalMatcher, evaluate, get_matcher,
                                     load_predictions, score_sample, values_match)
from pocketlm.intent.prompt import (SYSTEM_PROMPT, build_prompt, choose_candidates, format_answer,
                                    format_function_doc, parse_calls, retrieve, sample_messages,
                                    to_sft_records)
from pocketlm.intent.specs import (ArgSpec, FunctionSpec, Sample, load_droidcall, load_specs,
                                   write_droidcall, write_jsonl)
from pocketlm.intent.synth import synthesize
from pocketlm.intent import sft_data  # noqa: F401 - registers DroidCall data with `pocketlm finetune`

__all__ = [
    "ArgSpec", "FunctionSpec", "Sample", "AndroidIntent", "INTENTS", "SYSTEM_PROMPT",
    "load_specs", "load_droidcall", "write_droidcall", "write_jsonl",
    "build_prompt", "choose_candidates", "format_answer", "format_function_doc", "parse_calls",
    "retrieve", "sample_messages", "to_sft_records", "synthesize",
    "score_sample", "evaluate", "values_match", "get_matcher", "LexicalMatcher", "EmbeddingMatcher",
    "load_predictions", "to_adb", "to_adb_argv", "load_runner", "run_query", "predict",
]

