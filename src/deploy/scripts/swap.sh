# certctl: the swap — every rename of one change in ONE process that ignores hang-ups and
# interrupts (a dropped connection or a killed controller cannot split it), in a fixed order,
# the directories fsync'd, then `swapped` in the journal. Runs before the live test and the
# reload, in the same script.

# certctl_premove FROM TO moves a staged file beside the file a symlink resolves to (no live
# change yet: a file of ours gets another name).
certctl_premove() { mv -f -- "$1" "$2" || { printf '\036X swap %s 1\n' "$3"; exit 1; }; }

# certctl_rename FROM TO IDX renames a staged file over a live one (rename(2) in one directory).
certctl_rename() { mv -f -- "$1" "$2" || { s=$?; printf '\036X swap %s %s\n' "$3" "$s"; exit "$s"; }; }
