# certctl: cleanup — ONE `rm` for this run's temp files, its scratch directory and, last, the
# lock (`rm` goes on past a path it cannot remove and takes its arguments in order, so no other
# run starts while ours are still being removed). Each path still there afterwards is named
# (`R PATH failed`) and sets `fail`.
certctl_remove_all() {
  rm -rf -- "$@"
  for p; do if [ -e "$p" ] || [ -L "$p" ]; then fail=1; printf 'R %s failed\n' "$p"; fi; done
}
