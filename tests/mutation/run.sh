#!/usr/bin/env bash
# `make mutate [MUTATE=engine|api|all]`: mutation testing of the engine (and api) against tests/unit.
#
# cosmic-ray mutates files in place, so it runs in a copy (.mutate/) with PYTHONPATH pointing at the
# copy's operator/: the work tree, and any test run beside it, never sees a mutant. Niced: the
# run is long (one unit-test run per mutant) and meant to share the machine.
# Re-running with KEEP=1 keeps the session and only tests what is left (or what was reset).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
WHAT=${MUTATE:-engine}
OUT=$ROOT/.mutate
SESSION=$OUT/session-$WHAT.sqlite
CONFIG=$OUT/cosmic-ray-$WHAT.toml

for test in tests/unit/test_*.py; do
  grep -q " $test" tests/mutation/cosmic-ray.toml || { echo "$test is missing from test-command in tests/mutation/cosmic-ray.toml" >&2; exit 2; }
done
TREE=$OUT/tree-$WHAT
rm -rf "$TREE"
mkdir -p "$TREE"
# What tests/unit reads: the sources, the tests, the committed CRD, the examples, ../shared when present.
cp -r operator tests crds examples pyproject.toml "$TREE/"
find "$TREE" -name __pycache__ -prune -exec rm -rf {} +
if [[ -d $ROOT/../shared ]]; then ln -sfn "$(cd "$ROOT/../shared" && pwd)" "$OUT/shared"; fi
case $WHAT in
  engine) paths='["operator/stampede/engine"]' ;;
  api) paths='["operator/stampede/api"]' ;;
  all) paths='["operator/stampede/engine", "operator/stampede/api"]' ;;
  *) echo "MUTATE must be engine, api or all" >&2; exit 2 ;;
esac
sed "s|^module-path = .*|module-path = $paths|" tests/mutation/cosmic-ray.toml > "$CONFIG"

cd "$TREE"
export PYTHONPATH=$TREE/operator PATH=$BIN:$PATH CI=${CI:-true}
python -c 'import stampede, sys; assert stampede.__file__.startswith(sys.argv[1]), stampede.__file__' "$TREE/operator"
if [[ -z ${KEEP:-} || ! -f $SESSION ]]; then
  rm -f "$SESSION"
  cosmic-ray init "$CONFIG" "$SESSION"
  cr-filter-operators "$SESSION" "$CONFIG"
fi
start=$(date +%s)
nice -n "${NICE:-10}" cosmic-ray exec "$CONFIG" "$SESSION"
echo "cosmic-ray exec took $(( $(date +%s) - start )) s"
python "$ROOT/tests/mutation/score.py" "$SESSION"
