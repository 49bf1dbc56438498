"""Fine-tuning: the training loop (:mod:`.training`), applying a recommendation to a model
(:mod:`.apply`) and your own loop's schedule, phases and transforms (:mod:`.loop`), runs over
seeds and their cache (:mod:`.runs`), the comparison with the binary default (:mod:`.compare`),
the search seeded by the recommendation (:mod:`.search`) and the short training from scratch
(:mod:`.scratch`)."""
