"""`zhiyin generate`: stream a completion, a fill-in-the-middle or a chat answer."""

import argparse
import sys

from engine import SamplingParams
from zhiyin.config import load_config
from zhiyin.i18n import _
from zhiyin.prompts import chat_prompt, completion_prompt
from zhiyin.runtime import open_engine


def run_generate(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.prompt in (None, "-") else args.prompt
    engine = open_engine(load_config(), args.model, args.dtype, args.threads, args.adapter)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": text}
        ]
        prompt = chat_prompt(engine, messages)
    else:
        prompt = completion_prompt(engine, text, args.suffix)
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repeat_penalty, stop=args.stop + prompt.stop,
        stop_token_ids=prompt.stop_token_ids, seed=args.seed,
    )
    if not args.chat and args.suffix is None:
        sys.stdout.write(text)  # show the completion in place, as llama.cpp does
    stats = None
    for chunk in engine.generate(prompt, params):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        stats = chunk.stats or stats
    sys.stdout.write("\n")
    if stats and not args.quiet:
        print(_("{prompt} prompt tokens ({cached} cached), {generated} generated; "
                "first token after {ttft:.0f} ms, {speed:.1f} tokens/s").format(
            prompt=stats.num_prompt_tokens, cached=stats.num_cached_tokens, generated=stats.num_generated,
            ttft=stats.time_to_first_token_s * 1000, speed=stats.decode_tokens_per_s), file=sys.stderr)
    return 0
