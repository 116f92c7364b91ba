#!/bin/sh
# Validates the environment without running it (no images needed): the compose file,
# Prometheus's config, and the Grafana provisioning and dashboard JSON.
set -eu
cd "$(dirname "$0")"
docker-compose -f docker-compose.yml config -q
# The rule file is mounted at /etc/prometheus in the container; check it where it lies.
promtool check rules alerts.yml
tmp=$(mktemp ./.prometheus-check.XXXXXX)
trap 'rm -f "$tmp"' EXIT
sed "s#/etc/prometheus/alerts.yml#alerts.yml#" prometheus.yml > "$tmp"
promtool check config "$tmp"
python3 -m json.tool grafana/dashboards/tikv.json >/dev/null
echo "compose/tikv: docker-compose config, promtool check rules/config and the dashboard JSON are valid"
