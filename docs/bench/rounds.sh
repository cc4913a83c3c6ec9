#!/bin/bash
# Interleaved bench rounds for before/after tables in docs/performance.md.
# usage: docs/bench/rounds.sh ROUNDS OUT TREE1 [TREE2 ...]
# Each round runs the bench on PostgreSQL and on SQLite for every tree in turn (the
# code on PYTHONPATH=TREE), writing OUT/<tree>.<pg|lite>.<round>.json; then
# python3 docs/bench/rounds_table.py OUT prints every tree's rows side by side.
set -u
ROUNDS=$1; OUT=$2; shift 2
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for tree in "$@"; do
    name=$(basename "$tree")
    for be in pg lite; do
      if [ $be = pg ]; then
        args="--db postgresql://postgres@127.0.0.1:5432/test bench --runs 20 --years 1000 --writers 1,2,8 --repeats 100 --query-rows 1000000 --format json"
      else
        rm -f /tmp/benchlite.db*
        args="--db sqlite:////tmp/benchlite.db bench --runs 20 --years 1000 --writers 1 --repeats 100 --query-rows 100000 --format json"
      fi
      load=$(cut -d' ' -f1 /proc/loadavg)
      # shellcheck disable=SC2086
      (cd "$tree" && PYTHONPATH=$tree python3 -c "import sys; sys.argv[0] = 'twinledger'; from infrastructure.cli import main; main()" $args > "$OUT/$name.$be.$round.json" 2>/dev/null)
      echo "$(date +%H:%M:%S) round $round $name $be load $load rc $?"
    done
  done
done
