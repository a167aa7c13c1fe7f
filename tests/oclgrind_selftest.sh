#!/usr/bin/env bash
# Checks the checker: tests/oclgrind_check.sh must pass a clean kernel and
# fail each kernel with a known defect (out-of-bounds write, data race,
# uninitialized read), each with the report that names it.
#
#   tests/oclgrind_selftest.sh CHECK_SCRIPT CANARY_PROGRAM
set -u
check=$1
canary=$2
failed=0
expect() {
    local kind=$1 want_status=$2 want_text=$3 out status
    out=$(bash "$check" "$canary" "$kind" 2>&1)
    status=$?
    if [ "$status" -eq "$want_status" ] && { [ -z "$want_text" ] || grep -q "$want_text" <<<"$out"; }; then
        echo "canary $kind: exit $status${want_text:+, reports \"$want_text\"}  PASS"
    else
        echo "canary $kind: exit $status (want $want_status${want_text:+ and \"$want_text\"})  FAIL"
        echo "$out" | head -n 20
        failed=$((failed + 1))
    fi
}
command -v oclgrind >/dev/null || {
    echo "SKIP: oclgrind is not installed"
    exit 77
}
expect clean 0 ""
expect oob 1 "Invalid write"
expect race 1 "data race"
expect uninit 1 "Uninitialized value"
[ "$failed" -eq 0 ]
