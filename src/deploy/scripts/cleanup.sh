# certctl: cleanup — ONE `rm` for this run's temp files, its scratch directory and, last, the
# lock (`rm` goes on past a path it cannot remove and takes its arguments in order, so no other
# run starts while ours are still being removed). Each path still there afterwards is named
# (`R PATH failed`) and sets `fail`.
certctl_remove_all() {
  rm -rf -- "$@"
  for p; do if [ -e "$p" ] || [ -L "$p" ]; then fail=1; printf 'R %s failed\n' "$p"; fi; done
}

# certctl_cleanup LOCKDIR RUN PATH... is certctl_remove_all of the paths and, last, the
# emptied busy marker (journal.busy, beside the lock) and the lock — only while its holder
# still names run RUN: a run whose lock was broken (it was killed, and its remote script
# finished later) never removes the lock, or the marker, of the run that broke it.
certctl_cleanup() {
  l=$1 r=$2; shift 2
  h=; { IFS= read -r h < "$l/holder"; } 2>/dev/null
  case " $h " in *" run=$r "*) set -- "$@" "${l%/*}/journal.busy" "$l" ;; esac
  certctl_remove_all "$@"
}
