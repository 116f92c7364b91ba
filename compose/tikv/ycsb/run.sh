#!/bin/sh
# Loads the records once (the marker lives in the container), then runs workload A forever.
set -eu
if [ ! -f /tmp/loaded ]; then
    go-ycsb load tikv -P /ycsb/workloada -p tikv.pd="$PD" -p tikv.type=raw \
        -p recordcount="$RECORDS" -p threadcount="$THREADS"
    touch /tmp/loaded
fi
while true; do
    go-ycsb run tikv -P /ycsb/workloada -p tikv.pd="$PD" -p tikv.type=raw \
        -p recordcount="$RECORDS" -p threadcount="$THREADS"
done
