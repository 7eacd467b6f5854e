#!/usr/bin/env bash
# The dependency policy of deny.toml, with cargo-deny: licences, bans and sources for
# every crate the workspace builds, and RustSec advisories for what its users build
# (normal and build dependencies: a vulnerable or unsound one fails). The advisories come
# from the offline snapshot of the RustSec database beside the project
# (ENOS_ADVISORY_DB, default ../shared/advisory-db beside this checkout or the local
# repository it was cloned from); nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where cargo-deny 0.20 looks for the default advisory database under deny.toml's
# db-path: a git checkout, which the snapshot is made into (dated as the snapshot).
db=target/advisory-db/advisory-db-3157b0e258782691
# The snapshot: ENOS_ADVISORY_DB, or ../shared/advisory-db beside this checkout, or beside
# the local repository it was cloned from (a CI clone in a temporary folder).
snapshot="${ENOS_ADVISORY_DB:-}"
if [ -z "$snapshot" ]; then
    for root in . "$(git config --get remote.origin.url 2>/dev/null || true)"; do
        if [ -n "$root" ] && [ -d "$root/../shared/advisory-db/crates" ]; then
            snapshot="$root/../shared/advisory-db"
            break
        fi
    done
fi
if [ ! -d "${snapshot:-/nonexistent}/crates" ]; then
    echo "no advisory snapshot (ENOS_ADVISORY_DB, or ../shared/advisory-db beside this checkout or its origin): cannot check advisories" >&2
    exit 1
fi
rm -rf "$db"
mkdir -p "$(dirname "$db")"
cp -r "$snapshot" "$db"
(
    cd "$db"
    when="$(sed -n 's/.*(\([0-9-]*\)).*/\1/p' SNAPSHOT.txt | head -n1)T00:00:00Z"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
        git -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false commit -qm "advisory snapshot"
)
cargo deny --offline --exclude-dev check advisories
cargo deny --offline check bans licenses sources
