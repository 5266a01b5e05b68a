"""The tools: `qlab doctor` / `qlab report` (cli), `make bench`, `make checkpoints`, `make student`.

Tools may import anything; nothing imports them."""
