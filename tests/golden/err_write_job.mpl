# args: -o tests/golden/no_such_dir/mlp.job
# input: tests/golden/models/mlp2.mpl
# -o into a directory that does not exist.
