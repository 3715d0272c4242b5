#!/usr/bin/env python3
# deploy/shell-commands.py SCRIPT… — prints the programs the shell scripts run, one per line:
# the first word of every simple command (also in $( … ), pipelines and function bodies), less
# builtins, keywords, assignments, case patterns, array and arithmetic contents, heredoc bodies,
# functions any of the scripts defines, and words made of variables (unknowable). Used by
# deploy/fresh-root-check.sh.

import re, shlex, sys

LEAD = {"if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "command",
        "{", "function"}
WRAPPERS = {"timeout", "xargs", "nohup", "env", "sudo", "setsid", "nice", "stdbuf", "unshare",
            "chroot"}
KEYWORDS_END = {"fi", "done", "esac", "}", "in"}
BUILTINS = {"cd", "echo", "printf", "export", "set", "unset", "local", "read", "return",
            "exit", "shift", "trap", "wait", "source", ".", "eval", "test", "[", "[[", "true",
            "false", "break", "continue", "declare", "readonly", "type", "hash", "let", ":",
            "getopts", "pushd", "popd", "kill", "mapfile", "ulimit", "umask", "alias",
            "builtin", "select", "coproc", "for", "case"}
SEPARATORS = {";", ";;", "&", "&&", "|", "||", "(", ")", "()", "\n", "`", "{", "}", "|&", ";&",
              ");", ")|", ")&&", ")||"}


def tokens(text):
    text = re.sub(r"\\\n", " ", text)
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()`")
    lex.whitespace = " \t\r"  # newlines end commands
    lex.wordchars += "$:{}[]@%+,^!"
    lex.commenters = "#"
    return list(lex)


def substitutions(text):
    """The scripts inside $( … ), wherever they are (also within double quotes)."""
    out, i = [], 0
    while (i := text.find("$(", i)) >= 0:
        if text.startswith("$((", i):
            i += 3
            continue
        depth, j = 1, i + 2
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        out.append(text[i + 2:j - 1])
        i += 2
    return out


def flatten(text):
    """`$( … )`, `${ … }` and `$(( … ))` become `$V`: one word, whatever they hold."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text) and text[i + 1] in "({":
            opening = text[i + 1]
            closing = ")" if opening == "(" else "}"
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {opening: 1, closing: -1}.get(text[j], 0)
                j += 1
            out.append("$V")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def commands(text, defined):
    out = set()
    for inner in substitutions(text):
        out |= commands(inner, defined)
    toks = tokens(flatten(text))
    at_start, i, case_depth = True, 0, 0
    while i < len(toks):
        t = toks[i]
        if t in SEPARATORS or t in ("then", "do", "else", "elif"):
            at_start = True
            i += 1
            continue
        if t.endswith("=") and i + 1 < len(toks) and toks[i + 1] == "(":
            # an array assignment: its words are data
            while i < len(toks) and not toks[i].startswith(")"):
                i += 1
            at_start = toks[i] != ")" if i < len(toks) else True  # ");" ends the command
            i += 1
            continue
        if t.startswith("(("):
            # arithmetic: up to the token that closes it (punctuation comes grouped: "));")
            i += 1
            while i < len(toks) and not toks[i].startswith("))"):
                i += 1
            at_start = True
            i += 1
            continue
        if t == "case":
            case_depth += 1
        if t == "esac":
            case_depth -= 1
        if not at_start:
            i += 1
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if case_depth and nxt in (")", "|"):
            i += 1  # a case pattern
            continue
        if t in LEAD or re.match(r"^[A-Za-z_]\w*(\[.*\])?\+?=", t):
            if t == "command" and nxt == "-v":
                at_start = False  # asks whether a program is there
            i += 1
            continue
        at_start = False
        if t in WRAPPERS:
            # runs the command that follows its options (and timeout's duration)
            out.add(t)
            i += 1
            while i < len(toks) and (toks[i].startswith("-") or "=" in toks[i]
                                     or re.match(r"^\d+(\.\d+)?[smhd]?$", toks[i])):
                i += 1
            at_start = True
            continue
        if (t in BUILTINS or t in KEYWORDS_END or t in defined or "$" in t or "/" in t
                or not re.match(r"^[A-Za-z0-9_][\w.+-]*$", t) or t.isdigit()):
            i += 1
            continue
        out.add(t)
        i += 1
    return out


texts = []
for path in sys.argv[1:]:
    # heredoc bodies are data
    text = open(path).read()
    texts.append(re.sub(r"<<-?\s*(['\"]?)(\w+)\1[^\n]*\n.*?\n\s*\2\s*\n", "\n", text, flags=re.S))
# functions any of the scripts defines (a script may use those of one it sources)
defined = set()
for text in texts:
    defined |= set(re.findall(r"^\s*(?:function\s+)?([\w-]+)\s*\(\)", text, flags=re.M))
found = set()
for text in texts:
    found |= commands(text, defined)
print("\n".join(sorted(found)))
