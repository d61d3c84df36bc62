"""The one ``mudi`` command. Each verb is a module of :mod:`mudi.commands`, imported only when used.

A verb module provides ``HELP`` (one line), ``CONFIG`` (its config dataclass: the flags are generated from its
fields, :mod:`mudi.cliargs`), optionally ``POSITIONAL`` and ``ALIASES``, and ``main(config) -> int``. Every
verb takes ``--config FILE.yaml``, ``--set key=value`` (and, without a positional argument, trailing
``key=value``). Errors a user can fix (:class:`MudiError`) print one line and exit 2; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from mudi import __version__
from mudi.cliargs import add_config_arguments, load_from_args
from mudi.errors import MudiError
from mudi.io import os_error_message

# verb -> module; plain strings keep `import mudi.cli` light.
COMMANDS: dict[str, str] = {verb: f"mudi.commands.{verb}" for verb in (
    "run", "demo", "segmix", "convert", "segment", "describe", "prior", "train", "generate", "merge", "modular", "iterate",
    "evaluate", "benchmark", "push", "env", "ui")}
# One-line help per verb, so `mudi --help` imports no workflow module.
SUMMARIES: dict[str, str] = {
    "run": "the whole pipeline from a run file: (describe), segment, (prior), train, generate, evaluate, report",
    "demo": "`mudi run` on the shipped demo config: bundled samples, tiny offline model, GrabCut",
    "segmix": "compose subjects into Seg-Mix (or Cut-Mix) images and write a contact sheet",
    "convert": "convert a MuDI benchmark pair folder into native subject folders",
    "segment": "detect and segment subjects in reference photos (OWLv2 + SAM, or GrabCut offline)",
    "describe": "descriptive classes and a caption per photo from a vision-language model, into subject.yaml",
    "prior": "generate, segment and filter prior (class) images for prior preservation",
    "train": "DreamBooth-LoRA fine-tuning with Seg-Mix (or Cut-Mix / plain DreamBooth)",
    "generate": "generate images with mean-shifted initial latents",
    "merge": "merge LoRAs into one (weighted sum, concatenated ranks or Mix-of-Show gradient fusion)",
    "modular": "single-subject LoRAs -> one LoRA: reference photos, merge, Seg-Mix fine-tuning with KL (resumable)",
    "iterate": "iterative training: generate, score with D&C, keep the top K, fine-tune with KL; repeat",
    "evaluate": "score images with Detect-and-Compare, CLIP score and an HTML report",
    "benchmark": "run the paper's comparison: train, generate and evaluate every pair and method",
    "push": "publish a trained LoRA folder (weights, model card, validation images) to the Hugging Face Hub",
    "env": "print versions and devices for a bug report",
    "ui": "open the web UI (subjects, masks, Seg-Mix, training, generation, scores); needs mudi[ui]",
}


def _available() -> dict[str, str]:
    return {verb: mod for verb, mod in COMMANDS.items() if importlib.util.find_spec(mod) is not None}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mudi", description="Multi-subject personalization without identity "
                                     "mixing (MuDI): segment, train, generate, evaluate.")
    parser.add_argument("--version", action="version", version=f"mudi {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--verbose", action="store_true", help="show every library notice (mudi hides the known "
                        "harmless ones)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in _available().items():
        if name != verb:  # only the verb being run imports its module; `mudi --help` imports none
            sub.add_parser(name, help=SUMMARIES.get(name, ""))
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--debug", action="store_true", help="show full tracebacks")
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show every library notice")
        p.add_argument("--config", help=f"YAML file of {mod.CONFIG.__name__} keys; flags and overrides win over it")
        positional = getattr(mod, "POSITIONAL", None)
        if getattr(mod, "CONFIG_FILE_POSITIONAL", False):  # `mudi run RUN.yaml`: the file is the argument
            p.add_argument("config_file", nargs="?", metavar="CONFIG.yaml", help="the run file (same as --config)")
        add_config_arguments(p, mod.CONFIG, positional, getattr(mod, "ALIASES", None))
        if positional is None:
            p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                           help="dotted overrides, e.g. segmix.max_margin_frac=0.2")
        p.add_argument("--set", dest="set_overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                       help="override any config key (repeatable); same as a trailing key=value")
        _add_spelling_aliases(p)
    return parser


def _add_spelling_aliases(parser: argparse.ArgumentParser) -> None:
    """Accept every long flag with ``-`` or ``_`` (``--output_dir`` == ``--output-dir``)."""
    for action in list(parser._actions):
        for opt in list(action.option_strings):
            if not opt.startswith("--"):
                continue
            body = opt[2:]
            for alias in ("--" + body.replace("_", "-"), "--" + body.replace("-", "_")):
                if alias not in parser._option_string_actions:
                    parser._option_string_actions[alias] = action


MODEL_VERBS = ("run", "generate", "evaluate", "segment", "prior", "benchmark", "train", "demo", "merge", "modular",
               "iterate", "ui")


class _DropNotice(logging.Filter):
    """Drops two notices that are expected with mudi and only alarm users: transformers' "requires
    torchvision" (mudi avoids torchvision on purpose: its PyPI build breaks the CPU torch wheel; the PIL image
    processors it falls back to are the ones mudi expects) and diffusers' "No LoRA keys associated to
    CLIPTextModel" (mudi's LoRAs never touch the text encoders: the paper freezes them)."""

    #: said by transformers/diffusers on every call and harmless, or said once by mudi in its own words
    #: (a prompt cut at the encoder's length: mudi.sampling.prompt_length)
    NOTICES = ("requires torchvision", "No LoRA keys associated to CLIPTextModel",
               "The following part of your input was truncated", "Token indices sequence length is longer")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOTICES)


def _quiet_known_notices(quiet: bool = True) -> None:
    """Hide (or, with ``--verbose``, show again) the library notices in :attr:`_DropNotice.NOTICES`."""
    for name, module in (("transformers", "transformers.utils.logging"), ("diffusers", "diffusers.utils.logging")):
        try:
            importlib.import_module(module)  # creates the library's own stderr handler
        except ImportError:  # pragma: no cover
            continue
        for handler in logging.getLogger(name).handlers:
            ours = [f for f in handler.filters if isinstance(f, _DropNotice)]
            if quiet and not ours:
                handler.addFilter(_DropNotice())
            for f in ([] if quiet else ours):
                handler.removeFilter(f)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a verb runs (while parsing, importing): no traceback
        print("mudi: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    debug = args.debug or os.environ.get("MUDI_DEBUG") == "1"
    if hasattr(args, "set_overrides"):  # `--set k=v` and trailing `k=v` are one list
        args.overrides = list(getattr(args, "overrides", None) or []) + list(args.set_overrides)
    if getattr(args, "config_file", None):
        if args.config:
            parser.error("give the config file once: as the argument or with --config")
        args.config = args.config_file
    if args.command in MODEL_VERBS:
        _quiet_known_notices(quiet=not getattr(args, "verbose", False))
    try:
        mod = importlib.import_module(COMMANDS[args.command])
        config = load_from_args(mod.CONFIG, args)
        return int(mod.main(config) or 0)
    except MudiError as e:
        if debug:
            raise
        stopped = getattr(e, "exit_code", None)  # a run stopped on request (mudi.training.signals)
        print(f"mudi {args.command}: {'' if stopped else 'error: '}{e}", file=sys.stderr)
        return int(stopped or 2)
    except OSError as e:  # any file-system failure a verb did not turn into a MudiError itself
        if debug:
            raise
        print(f"mudi {args.command}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mudi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
