#!/usr/bin/env bash
# Least-privilege RabbitMQ users for one pgfleet install (namespace), with rabbitmqctl.
#
#   NAMESPACE=pgfleet APP_USER=signup-app APP_PASSWORD=... \
#   WORKER_USER=pgfleet WORKER_PASSWORD=... deploy/rabbitmq/least-privilege.sh
#
# - APP_USER: what your application gets to publish tenant signups. It may write only to
#   the exchange <ns>.jobs, and only with routing key `provision` (topic permissions are
#   checked against the routing key of every publish to a topic exchange). It can't
#   configure or read anything: a leaked app credential can create tenants, nothing else —
#   no deletes, restores, backups or migrations, no reading other jobs.
# - WORKER_USER (optional): pgfleet's own processes (workers, API, scheduler). They declare
#   and use everything under <ns>.* and nothing else on the broker.
#
# - MONITOR_USER (optional): reads queue figures through the management API and nothing
#   else (tag `monitoring`, no configure/write/read permission) — for KEDA's `protocol: http`
#   trigger and Prometheus' RabbitMQ exporter.
# - APPLY_POLICY=1 (optional): a policy `<ns>-queues` on pgfleet's queues — quorum queue
#   leaders spread over the cluster's nodes (`queue-leader-locator: balanced`), and a
#   broker-side delivery limit of 50 above pgfleet's own (20, PGFLEET_DELIVERY_LIMIT) whose
#   overflow is dead-lettered to `<ns>.dead`, never dropped: a backstop if every worker
#   crashes on a message before it can dead-letter it with a reason.
#
# Users that exist already get their permissions reset to these; passwords are only set
# for new users. VHOST defaults to /.
set -euo pipefail

: "${NAMESPACE:?set NAMESPACE (PGFLEET_NAMESPACE of the install)}"
: "${APP_USER:?set APP_USER}"
VHOST="${VHOST:-/}"
RABBITMQCTL="${RABBITMQCTL:-rabbitmqctl}"
ns_re="$(printf '%s' "$NAMESPACE" | sed 's/[.[\*^$()+?{|]/\\&/g')"

ensure_user() { # user, password
  if ! "$RABBITMQCTL" -q list_users | awk '{print $1}' | grep -qxF "$1"; then
    : "${2:?a password is needed to create user $1}"
    "$RABBITMQCTL" -q add_user "$1" "$2" >/dev/null
  fi
}

ensure_user "$APP_USER" "${APP_PASSWORD:-}"
#                                     configure  write                   read
"$RABBITMQCTL" -q set_permissions -p "$VHOST" "$APP_USER" '^$' "^${ns_re}\\.jobs\$" '^$'
"$RABBITMQCTL" -q set_topic_permissions -p "$VHOST" "$APP_USER" "${NAMESPACE}.jobs" '^provision$' '^$'

if [ -n "${WORKER_USER:-}" ]; then
  ensure_user "$WORKER_USER" "${WORKER_PASSWORD:-}"
  "$RABBITMQCTL" -q set_permissions -p "$VHOST" "$WORKER_USER" "^${ns_re}\\." "^${ns_re}\\." "^${ns_re}\\."
fi
echo "rabbitmq: $APP_USER may publish only provision jobs to ${NAMESPACE}.jobs on vhost $VHOST" >&2

if [ -n "${MONITOR_USER:-}" ]; then
  ensure_user "$MONITOR_USER" "${MONITOR_PASSWORD:-}"
  "$RABBITMQCTL" -q set_user_tags "$MONITOR_USER" monitoring
  "$RABBITMQCTL" -q set_permissions -p "$VHOST" "$MONITOR_USER" '^$' '^$' '^$'
fi

if [ "${APPLY_POLICY:-0}" = "1" ]; then
  "$RABBITMQCTL" -q set_policy -p "$VHOST" --apply-to queues --priority 10 \
    "${NAMESPACE}-queues" "^${ns_re}\\." \
    "{\"queue-leader-locator\": \"balanced\", \"delivery-limit\": 50, \"dead-letter-exchange\": \"${NAMESPACE}.dead\"}" >/dev/null
fi
