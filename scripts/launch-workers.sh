#!/usr/bin/env bash
# Start gan-ddp workers on other machines over ssh.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/launch-workers.sh --coordinator ws://HOST:PORT [options] HOST [HOST...]

Starts workers on each HOST over ssh, detached (nohup), each logging to a file in DIR on its host.

By default (--per-host auto) each host decides for itself: where the native addon is built
(native/build/Release/gan_native.node), one worker computing with every core (--threads = its core
count); where it is not, one worker per core, since the wasm backend runs one thread per process.
Their logs are DIR/worker-H-J.log (host H, counted from 0 in the order given; worker J on it).
With --per-host N, N workers per host logging to DIR/worker-K.log, K counted across all hosts:
with --per-host 2, host1 runs workers 0 and 1, host2 runs 2 and 3.

Options:
  --coordinator URL   the coordinator's address as the workers will see it (ws:// or wss://); required
  --token-env VAR     take the token from this shell's variable VAR instead of GAN_DDP_TOKEN
  --per-host N|auto   workers per host (default auto: see above)
  --dir PATH          the project directory on the hosts, holding dist/ (default: this checkout's path)
  --node PATH         node executable on the hosts (default: node)
  --backend NAME      worker --backend (default: the worker's own default, auto)
  --threads N         worker --threads (default: the worker's own default)
  --connect-timeout S worker --connect-timeout in seconds (default: the worker's own default)
  -h, --help          this text

Token: when GAN_DDP_TOKEN (or the --token-env variable) is set here, the token is written to ssh's
standard input and read on the host by the shell's `read` builtin into GAN_DDP_TOKEN, which the
workers inherit. It never appears on a command line: not on the local ssh's, nor on the remote
shell's or the workers' (so not in `ps` on any machine), and no sshd SendEnv/AcceptEnv setup is
needed. Without a token, ssh's standard input is /dev/null. The hosts' login shell must be a
POSIX shell (sh, bash, dash, zsh).

Environment:
  SSH                 the ssh command, split on spaces (default: ssh), e.g. SSH="ssh -i key -o BatchMode=yes"
  GAN_DDP_TOKEN       the coordinator's token, forwarded to the workers as described above

Exits non-zero when any host could not be reached or refused the command; the others still start.
EOF
}

die() {
  printf 'launch-workers: error: %s\n' "$1" >&2
  exit 2
}

# POSIX single-quoting, so the remote login shell (whatever it is) sees each value as one word.
sq() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

coordinator=""
token_var=""
per_host=auto
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_bin="node"
backend=""
threads=""
connect_timeout=""
hosts=()

need_value() {
  [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --coordinator) need_value "$@"; coordinator="$2"; shift 2 ;;
    --coordinator=*) coordinator="${1#*=}"; shift ;;
    --token-env) need_value "$@"; token_var="$2"; shift 2 ;;
    --token-env=*) token_var="${1#*=}"; shift ;;
    --per-host) need_value "$@"; per_host="$2"; shift 2 ;;
    --per-host=*) per_host="${1#*=}"; shift ;;
    --dir) need_value "$@"; dir="$2"; shift 2 ;;
    --dir=*) dir="${1#*=}"; shift ;;
    --node) need_value "$@"; node_bin="$2"; shift 2 ;;
    --node=*) node_bin="${1#*=}"; shift ;;
    --backend) need_value "$@"; backend="$2"; shift 2 ;;
    --backend=*) backend="${1#*=}"; shift ;;
    --threads) need_value "$@"; threads="$2"; shift 2 ;;
    --threads=*) threads="${1#*=}"; shift ;;
    --connect-timeout) need_value "$@"; connect_timeout="$2"; shift 2 ;;
    --connect-timeout=*) connect_timeout="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; hosts+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) hosts+=("$1"); shift ;;
  esac
done

[[ -n "$coordinator" ]] || die "--coordinator ws://HOST:PORT is required (see --help)"
[[ "$coordinator" =~ ^wss?://[^[:space:]/]+(/[^[:space:]]*)?$ ]] || die "--coordinator $coordinator: expected ws://HOST:PORT or wss://HOST:PORT"
[[ "$per_host" == auto || "$per_host" =~ ^[1-9][0-9]*$ ]] || die "--per-host $per_host: expected auto or a whole number from 1 up"
[[ -z "$threads" || "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads $threads: expected a whole number from 1 up"
[[ -z "$connect_timeout" || "$connect_timeout" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--connect-timeout $connect_timeout: expected a number of seconds"
[[ -z "$backend" || "$backend" =~ ^[a-z]+$ ]] || die "--backend $backend: expected a backend name such as wasm"
[[ ${#hosts[@]} -gt 0 ]] || die "no hosts given (see --help)"
token=""
if [[ -n "$token_var" ]]; then
  [[ "$token_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--token-env $token_var: expected an environment variable name"
  [[ -n "${!token_var:-}" ]] || die "--token-env $token_var: $token_var is not set in this shell"
  token="${!token_var}"
else
  token="${GAN_DDP_TOKEN:-}"
fi
[[ "$token" != *$'\n'* ]] || die "the token must be a single line"

read -r -a ssh_cmd <<<"${SSH:-ssh}"
[[ ${#ssh_cmd[@]} -gt 0 ]] || die "SSH is empty"

worker_args="--connect $(sq "$coordinator")"
[[ -n "$backend" ]] && worker_args+=" --backend $(sq "$backend")"
# With --per-host auto the thread count is decided per host (below).
[[ -n "$threads" && "$per_host" != auto ]] && worker_args+=" --threads $(sq "$threads")"
[[ -n "$connect_timeout" ]] && worker_args+=" --connect-timeout $(sq "$connect_timeout")"

failed=0
k=0
h=0
for host in "${hosts[@]}"; do
  cmd="cd $(sq "$dir")"
  if [[ -n "$token" ]]; then
    cmd+=" && IFS= read -r GAN_DDP_TOKEN && export GAN_DDP_TOKEN"
  fi
  started=()
  if [[ "$per_host" == auto ]]; then
    # Decided on the host: one worker on every core with the native addon, one wasm worker per core without it.
    cores='$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)'
    if [[ -n "$threads" ]]; then each="$(sq "$threads")"; else each='$t'; fi
    cmd+=" && c=$cores && if [ -f native/build/Release/gan_native.node ]; then n=1; t=\$c; else n=\$c; t=1;"
    cmd+=" echo \"\$(hostname): no native addon here: one wasm worker per core (\$n)\" >&2; fi"
    cmd+=" && j=0 && while [ \$j -lt \$n ]; do"
    cmd+=" { nohup $(sq "$node_bin") dist/cli/worker.js $worker_args --threads $each > worker-$h-\$j.log 2>&1 < /dev/null & }; j=\$((j + 1)); done"
    started+=("$h-*")
  else
    for ((j = 0; j < per_host; j++)); do
      # stdin from /dev/null and both streams to the log: ssh returns at once instead of waiting on the worker.
      cmd+=" && { nohup $(sq "$node_bin") dist/cli/worker.js $worker_args > worker-$k.log 2>&1 < /dev/null & }"
      started+=("$k")
      k=$((k + 1))
    done
  fi
  h=$((h + 1))
  status=0
  if [[ -n "$token" ]]; then
    printf '%s\n' "$token" | "${ssh_cmd[@]}" "$host" "$cmd" || status=$?
  else
    "${ssh_cmd[@]}" "$host" "$cmd" </dev/null || status=$?
  fi
  if [[ $status -eq 0 && "$per_host" == auto ]]; then
    printf '%s: started its workers (logs %s/worker-%s.log)\n' "$host" "$dir" "${started[0]}"
  elif [[ $status -eq 0 ]]; then
    for w in "${started[@]}"; do
      printf '%s: started worker %s (log %s/worker-%s.log)\n' "$host" "$w" "$dir" "$w"
    done
  else
    printf 'launch-workers: %s: ssh failed with status %s; workers %s not started\n' "$host" "$status" "${started[*]}" >&2
    failed=1
  fi
done
exit $failed
