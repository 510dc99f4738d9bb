#!/usr/bin/env bash
# `make docs-check`: the pages cannot drift from the binary. Checks, against
# target/release/rulehost's own --help texts:
# - every `rulehost ...` command in a shell block of README.md and docs/*.md names a real
#   subcommand and only flags that subcommand accepts;
# - every `--flag` the pages mention anywhere is one of rulehost's flags, or one of the
#   few other tools' flags listed below;
# - every docs/ page the README links to exists.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RULEHOST:-target/release/rulehost}
python3 - "$BIN" <<'PY'
import glob, re, subprocess, sys

binary = sys.argv[1]
# Other tools' flags the pages show, by tool.
FOREIGN = {"--fresh": "scripts/repeat-tests.sh", "--from-file": "kubectl", "--bench": "cargo",
           "--network": "docker", "--privileged": "docker", "--rm": "docker",
           "--docker-server": "kubectl", "--docker-username": "kubectl",
           "--docker-password": "kubectl", "--signature": "cosign", "--tlog-upload": "cosign",
           "--insecure-ignore-tlog": "cosign", "--output-signature": "cosign",
           "--disable": "componentize-js", "--wit": "componentize-js",
           "--world-name": "componentize-js"}
COMMANDS = ["run", "replay", "inspect", "trigger", "new", "rule keygen", "rule sign",
            "rule push", "rule pull"]

def flags_of(command):
    out = subprocess.run([binary, *command.split(), "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"docs-check: `rulehost {command} --help` failed: {out.stderr.strip()}")
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))

accepted = {command: flags_of(command) for command in COMMANDS}
everything = set().union(*accepted.values(), flags_of(""))
pages = ["README.md"] + sorted(glob.glob("docs/*.md"))
problems, commands_checked = [], 0
for page in pages:
    text = open(page).read()
    for flag in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))):
        if flag not in everything and flag not in FOREIGN:
            problems.append(f"{page}: {flag} is no rulehost flag")
    in_block = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        # rulehost as a command: at the line's start, after a pipe, `;`, `&&`, `$(` or a path.
        match = re.search(r"(?:^\s*|[|;&(]\s*|/)rulehost\s+(.*)", line)
        if not in_block or not match:
            continue
        words = match.group(1).split("#")[0].split()
        command = next((c for c in COMMANDS if words[:len(c.split())] == c.split()), None)
        if command is None:
            problems.append(f"{page}:{number}: no rulehost command in {line.strip()!r}")
            continue
        commands_checked += 1
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words)):
            if flag not in accepted[command]:
                problems.append(f"{page}:{number}: `rulehost {command}` has no {flag}")
for link in re.findall(r"\]\((docs/[^)#]+)", open("README.md").read()):
    if not glob.glob(link):
        problems.append(f"README.md: links to missing {link}")
for problem in problems:
    print(f"docs-check: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"docs-check: {len(pages)} pages, {commands_checked} commands, every flag known")
PY
