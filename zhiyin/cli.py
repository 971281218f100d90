"""The `zhiyin` command. Each verb parses its arguments, calls the app core, prints the result.

User errors (EngineError and subclasses) become one translated line on stderr and exit code 2.
"""

import argparse
import os
import sys

from zhiyin.commands.lsp import parse_tcp_address
from zhiyin.i18n import N_, _, translate_error

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# argparse's own words, in our catalogs; argparse looks its module-level `_` up at call time.
ARGPARSE_MESSAGES = (
    N_("usage: "), N_("positional arguments"), N_("options"), N_("show this help message and exit"),
    N_("the following arguments are required: %s"), N_("unrecognized arguments: %s"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"), N_("argument %(argument_name)s: %(message)s"),
    N_("%(prog)s: error: %(message)s\n"), N_("invalid %(type)s value: %(value)r"), N_("expected one argument"),
)
argparse._ = _


def _bounded(kind, low: float, high: float = float("inf"), *, low_open: bool = False):
    """An argparse type: a number in [low, high] (or (low, high] when `low_open`)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(_("not a number: {value}").format(value=text)) from None
        if value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(_("{value} is out of range").format(value=text))
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zhiyin",
        description=_("Zhiyin (知音): a local, private coding assistant."),
    )
    verbs = parser.add_subparsers(dest="verb", metavar=_("COMMAND"), required=True)

    gen = verbs.add_parser("generate", help=_("Complete code or answer a question with the local model."),
                           description=_("Stream a completion of PROMPT from the local model."))
    gen.add_argument("prompt", nargs="?", default=None,
                     help=_("the text to complete; read from standard input when omitted or '-'"))
    gen.add_argument("--chat", action="store_true",
                     help=_("treat PROMPT as a chat message and answer it with the model's chat template"))
    gen.add_argument("--suffix", default=None,
                     help=_("code after the cursor: fill in the middle (for models with FIM tokens)"))
    gen.add_argument("--system", default=None, help=_("system message for --chat"))
    _add_model_arguments(gen)
    gen.add_argument("--max-tokens", type=_bounded(int, 0), default=256, help=_("most tokens to generate (default: %(default)s)"))
    gen.add_argument("--temperature", type=_bounded(float, 0), default=0.0,
                     help=_("sampling temperature; 0 picks the most likely token (default: %(default)s)"))
    gen.add_argument("--top-k", type=_bounded(int, 0), default=0, help=_("sample among the K most likely tokens; 0: all"))
    gen.add_argument("--top-p", type=_bounded(float, 0, 1, low_open=True), default=1.0, help=_("nucleus sampling threshold (default: %(default)s)"))
    gen.add_argument("--repeat-penalty", type=_bounded(float, 0, low_open=True), default=1.0,
                     help=_("penalty for tokens already present; 1.0: off (default: %(default)s)"))
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT",
                     help=_("stop before this text; may be given several times"))
    gen.add_argument("--seed", type=int, default=None, help=_("random seed, for repeatable sampling"))
    gen.add_argument("--quiet", action="store_true", help=_("print only the generated text, no statistics"))

    model = verbs.add_parser("model", help=_("List the models Zhiyin knows."))
    model_verbs = model.add_subparsers(dest="model_verb", metavar=_("COMMAND"), required=True)
    model_verbs.add_parser("list", help=_("Show the known models and where their files are."))

    index = verbs.add_parser("index", help=_("Index a repository for search and completions."),
                             description=_("Parse, chunk and embed the source files of a repository. Only what "
                                           "changed since the last run is read again."))
    index.add_argument("path", nargs="?", default=None,
                       help=_("the repository (default: the git work tree around the current folder)"))
    index.add_argument("--no-embeddings", action="store_true",
                       help=_("skip the vectors: faster, but search finds only words and names"))
    index.add_argument("--quiet", action="store_true", help=_("no progress bar"))

    search = verbs.add_parser("search", help=_("Search the indexed repository."),
                              description=_("Find the code QUERY is about: words, names and meaning "
                                            "(in English or Chinese)."))
    search.add_argument("query", help=_("what to look for: an identifier, an error message, or a question"))
    search.add_argument("-k", type=_bounded(int, 1, 1000), default=10, help=_("number of results (default: %(default)s)"))
    search.add_argument("--path", action="append", default=[], metavar="GLOB",
                        help=_("only files matching this gitignore-style pattern; may be given several times"))
    search.add_argument("--lang", action="append", default=[], metavar="LANGUAGE",
                        help=_("only files in this language (python, typescript, go, …); may be given several times"))
    search.add_argument("--lines", type=_bounded(int, 0), default=3, help=_("lines of code shown per result (default: %(default)s)"))
    search.add_argument("--json", action="store_true", help=_("one JSON object per result"))
    search.add_argument("--no-embeddings", action="store_true", help=_("words and names only: no model is loaded"))
    _add_repo_argument(search)

    repo_map = verbs.add_parser("map", help=_("Show the repository map: the definitions the code uses most."),
                                description=_("Rank definitions by how much the rest of the repository uses them "
                                              "and print the top ones that fit the budget."))
    repo_map.add_argument("--budget", type=_bounded(int, 1), default=1024, help=_("most tokens to print (default: %(default)s)"))
    repo_map.add_argument("--focus", action="append", default=[], metavar="FILE",
                          help=_("rank around this file, as when editing it; may be given several times"))
    _add_repo_argument(repo_map)

    lsp = verbs.add_parser("lsp", help=_("Serve editors over the Language Server Protocol."),
                           description=_("Run the language server: inline completions from the local model and the "
                                         "repository index, over standard input/output unless --tcp is given."))
    lsp.add_argument("--tcp", type=parse_tcp_address, default=None, metavar="HOST:PORT",
                     help=_("listen on TCP instead (PORT alone: 127.0.0.1); serves one client, then exits"))
    lsp.add_argument("--model", "-m", default=None,
                     help=_("model name from `zhiyin model list`, or a GGUF file or Hugging Face folder"))

    from zhiyin.commands.memory_parser import add_parser as add_memory_parser

    add_memory_parser(verbs, _bounded, _add_repo_argument)

    from zhiyin.commands.review_parser import add_parser as add_review_parser

    add_review_parser(verbs, _bounded, _add_repo_argument)

    from zhiyin.commands.serve import add_parser as add_serve_parser

    add_serve_parser(verbs, _bounded)

    from zhiyin.commands.engine import add_parser as add_engine_parser

    add_engine_parser(verbs, _bounded, _add_model_arguments)

    from zhiyin.commands.adapt_parser import add_parser as add_adapt_parser

    add_adapt_parser(verbs, _bounded)
    return parser


def _add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=None,
                        help=_("the repository (default: the git work tree around the current folder)"))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help=_("model name from `zhiyin model list`, or a GGUF file or Hugging Face folder"))
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                        help=_("weight and KV precision (default: bf16; fp32 is exact but slower)"))
    parser.add_argument("--threads", type=_bounded(int, 1), default=None, help=_("CPU threads (default: all cores)"))
    parser.add_argument("--adapter", default=None,
                        help=_("a repository adapter from `zhiyin adapt` (name or file; \"none\": the base model)"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import EngineError

    try:
        if args.verb == "generate":
            from zhiyin.commands.generate import run_generate

            return run_generate(args)
        if args.verb == "model":
            from zhiyin.commands.models import run_model_list

            return run_model_list(args)
        if args.verb == "lsp":
            from zhiyin.commands.lsp import run_lsp

            return run_lsp(args)
        if args.verb == "engine":
            from zhiyin.commands.engine import run_engine

            return run_engine(args)
        if args.verb == "serve":
            from zhiyin.commands.serve import run_serve

            return run_serve(args)
        if args.verb == "review":
            from zhiyin.commands.review import run_review

            return run_review(args)
        if args.verb == "adapt":
            from zhiyin.commands.adapt import run_adapt

            return run_adapt(args)
        if args.verb == "memory":
            from zhiyin.commands.memory import run_memory

            return run_memory(args)
        if args.verb in ("index", "search", "map"):
            from zhiyin.commands import index

            return {"index": index.run_index, "search": index.run_search, "map": index.run_map}[args.verb](args)
    except EngineError as error:
        print(_("error: {message}").format(message=translate_error(error)), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `zhiyin generate ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
