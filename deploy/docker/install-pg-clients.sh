#!/bin/sh
# Installs the PostgreSQL client tools pgfleet runs (pg_dump, psql) for the given majors.
# pg_dump must be at least as new as the server it dumps, and pgfleet picks the binaries
# matching each server from /usr/lib/postgresql/<major>/bin, so an image that serves
# PostgreSQL 14–18 servers carries all five.
#   install-pg-clients.sh --pgdg 14 15 16 17 18   # from apt.postgresql.org (the image)
#   install-pg-clients.sh                         # the distribution's version (CI, a laptop)
# Used by deploy/docker/Dockerfile and by .ci/run, so the two can't drift.
set -eu
pgdg=0
if [ "${1:-}" = "--pgdg" ]; then pgdg=1; shift; fi
export DEBIAN_FRONTEND=noninteractive
have_all=1
for major in "$@"; do
  [ -x "/usr/lib/postgresql/$major/bin/pg_dump" ] || have_all=0
done
if [ "$#" -eq 0 ] && command -v pg_dump >/dev/null 2>&1; then exit 0; fi
if [ "$#" -gt 0 ] && [ "$have_all" -eq 1 ]; then exit 0; fi
apt-get update -qq
if [ "$pgdg" -eq 1 ]; then
  apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg >/dev/null
  . /etc/os-release
  curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    | gpg --dearmor -o /usr/share/keyrings/pgdg.gpg
  echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
    > /etc/apt/sources.list.d/pgdg.list
  apt-get update -qq
fi
packages=""
if [ "$#" -eq 0 ]; then
  packages="postgresql-client"
else
  for major in "$@"; do packages="$packages postgresql-client-$major"; done
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
if [ "$pgdg" -eq 1 ]; then
  apt-get purge -y -qq curl gnupg >/dev/null && apt-get autoremove -y -qq >/dev/null
fi
rm -rf /var/lib/apt/lists/*
