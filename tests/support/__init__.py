"""What several test modules share and no test module is: the emulated API server and the
operator under it, fault injection, sample specs and plans, the bad-data corpus, the tiny
trainer ingredients and the local-run helpers."""
