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
