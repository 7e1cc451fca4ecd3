#!/bin/bash
# Every program's man page (man/*.1) has the sections DESIGN.md gives, in its
# order: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXIT STATUS, ENVIRONMENT,
# EXAMPLES, SEE ALSO. A page may leave out ENVIRONMENT; every other section
# must be there, and no other one.
# usage: man_sections.sh SOURCE_DIR
set -u
order='NAME SYNOPSIS DESCRIPTION OPTIONS EXIT STATUS ENVIRONMENT EXAMPLES SEE ALSO'
failed=0
pages=0
for page in "$1"/man/*.1; do
    pages=$((pages + 1))
    sections=$(sed -n 's/^\.SH *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$page" | tr '\n' ' ' | sed 's/ $//')
    without_environment=${order/ ENVIRONMENT/}
    if [ "$sections" != "$order" ] && [ "$sections" != "$without_environment" ]; then
        echo "FAIL $(basename "$page"): sections are '$sections', want '$order'"
        failed=$((failed + 1))
    fi
done
[ "$pages" -gt 0 ] || { echo "FAIL no man/*.1 pages under $1"; exit 1; }
echo "$pages pages, $failed out of order"
[ "$failed" -eq 0 ]
