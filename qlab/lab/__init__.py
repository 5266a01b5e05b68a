"""The classroom: kit/ (shared by every lesson), lessons/lNN_*/ (lesson NN's code), tools/ (the
commands). README.md, "Layout", has the map and the import rules."""
