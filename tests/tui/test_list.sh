#!/bin/sh
# The list: 5000 rows, filtered by typing (case-insensitive), moved through
# with the keys, disabled rows with their reason, Enter writes the choice.
set -u
. "$(dirname "$0")/lib.sh"
plan 20

start 80 24 -- list 5000
wait_screen "5000 of 5000" >/dev/null
check $? "all rows counted" "$SCREEN"
expect_in "first row selected" "> Row 00001  Tesla      Smith household 1" "$SCREEN"
expect_in "a disabled row shows its reason" "Row 00007  Solis      Müller household 7  (not configured: set [vendor.solis]" "$SCREEN"

keys End
wait_screen "> Row 05000" >/dev/null
check $? "End: the last row, scrolled into view" "$SCREEN"
keys PageUp
wait_screen "> Row 04981" >/dev/null
check $? "PageUp: a page up (20 rows shown, one kept in view)" "$SCREEN"
keys Home Down Down
wait_screen "> Row 00003" >/dev/null
check $? "Home, Down, Down" "$SCREEN"

keys_text "HOUSEHOLD 42"
wait_screen "111 of 5000" >/dev/null
check $? "typing filters, case-insensitive (42, 420-429, 4200-4299)" "$SCREEN"
expect_in "the filter is shown" "Filter: HOUSEHOLD 42" "$SCREEN"
keys Home Enter
wait_screen "Cannot choose it: not configured: set [vendor.solis] client_id" >/dev/null
check $? "Enter on a disabled row explains why, and stays" "$SCREEN"
keys BSpace BSpace BSpace
wait_screen "Filter: HOUSEHOLD" >/dev/null
wait_screen "5000 of 5000" >/dev/null
check $? "Backspace widens the filter" "$SCREEN"
keys Escape
wait_screen "Type to filter" >/dev/null
check $? "Esc clears the filter" "$SCREEN"

keys_text "mÜller"
wait_screen "1000 of 5000" >/dev/null
check $? "non-ASCII filter, case-insensitive" "$SCREEN"
keys C-u
keys_text "zzz"
wait_screen "No row matches the filter." >/dev/null
check $? "no match is said" "$SCREEN"
keys Enter
sleep 0.2
[ ! -e "$RUN/out" ]
check $? "Enter with nothing shown does nothing"

keys C-u
keys_text "household 42"
wait_screen "111 of 5000" >/dev/null
keys Down Down Enter
expect_exit "Enter on an enabled row" 0
expect_out "the chosen row is written" "Row 00421  Tesla      Nguyen household 421"

finish
