"""What issue 24's "unseen-field" well probe measures: fields of ONE well read by the same probe (a control, no target).

    python benchmarks/images_field_control.py --runs /tmp/img17/mixstyle --seeds 0-9   # round 3's saved networks (read-only)
    python benchmarks/images_field_control.py --small --out runs/bench-small/field-control   # one tiny network trained (seconds)

Declared (session 17, this docstring committed before any figure of this control was computed). Read-only: no network
is trained except the tiny one of `--small`; nothing is tuned.

Why. Round 3 of issue 24's image target (`benchmarks/images_adversary.py --style-mixing`, part (b)) reads the well within
the inhibitor class (B03 / B04 / B05) on the crops of fields the network never trained on. In `bbbc021-cells` every field
lies in one well (B02: 4 fields, all DMSO; B03: 4; B04: 4; B05: 1), and with a field-grouped split the unseen inhibitor
crops are three fields: on nine seeds of ten two of one well and one of another, so that reading is, in effect, "can an
unseen field of one well be told from an unseen field of another". The control asks the same probe to tell apart two
fields of the SAME well.

The probe. `phenolens.training.adversary.domain_probe`, the code behind `embedding_probes` and the benchmark's figures
(logistic regression on standardised features, balanced classes, 5 stratified folds mixing the crops of the fields, the
run's seed; balanced accuracy); no second probe is written. A "pair reading" is `domain_probe` on the crops of two
fields, its domain the field (the two fields labelled as if they were two wells), every crop of both fields (their
counts as they are: 34-59 crops per inhibitor field, 86-123 per B02 field), chance 0.5; the figure is its balanced
accuracy minus 0.5. Pairs:
  - different-well pairs (D): two inhibitor fields of two different wells (B03 x B04, B03 x B05, B04 x B05: 24 pairs);
  - same-well pairs (S): two fields of B03 or two of B04 (12 pairs): the same class and the same range of crop counts as D;
  - B02 pairs (reported beside, not in the reading): two fields of B02 (6 pairs; DMSO, larger fields).
Which crops. The run's split is recomputed as `images train` makes it (`training.splits.stratified_split`: the test split,
`--test-fraction` grouped by field and seeded by the run's seed, then the validation split, `--validation-fraction`,
within the rest) and checked against the run's held_out.csv (the same crops, else the script stops). Every field is
wholly trained on or wholly not. Per network and seed, the pairs are read on (i) all crops: every pair; (ii) the crops
trained on: pairs of two trained-on fields; (iii) the crops not trained on (validation and held-out fields): pairs of
two unseen fields. Each seed's figure for a group (D, S, B02) on a subset is the mean over its pairs there, undefined
when it has none (on (iii) S is defined on every seed and D on nine: seed 5's unseen inhibitor fields are all B04).
Beside them, on each subset: (W) the benchmark's within-class well probe (`domain_probe(features, well, None, class)`,
as `embedding_probes` reads "ungrouped" / "trained_images" / "unseen_images"; it must reproduce the run's metrics.json
to 1e-12 on (i), (ii) and (iii), a check of the path, and the script stops otherwise) and (F) the within-well field probe
(`domain_probe(features, field, None, well)`: within each well with two or more fields in the subset, the field, chance
1 / its fields there, averaged weighted by crops; B05 never counts, it has one field), each minus its chance.
Representations. Each saved network of round 3 (`--runs R`: `R/seed-S` with MixStyle and `R/baseline/seed-S` without;
`ImageClassifier.load`, eval mode, `ImageClassifier.embed` of all 800 labelled crops given at once: the run's own
per-field intensity normalisation and channel standardisation, as `images predict` applies them). And a network-free
reference, the same for every seed but for its fold seed and its subsets: per stain, the crop's mean, standard deviation
and sharpness (`images_field_look.crop_statistics`) after the run's intensity normalisation (`field`).
Per seed the paired difference D - S on each subset (the seeds where both are defined). Over seeds: mean, standard error
(ddof 1, over sqrt(n)) and one-sided 90 % bounds (mean -/+ t(0.90, n - 1) standard errors), `images_adversary.seed_spread`.
The reading (decisive on (iii), the subset of part (b); (i) and (ii) are read by the same rule and reported), for each
representation apart:
  - "the well beyond the field" when the lower bound of D - S is above 0: fields of different wells are told apart better
    than fields of one well; the well carries signal beyond the field on new fields, and part (b) is a fair target for the
    excess (S on (iii) is then the floor a method that removes only the well would leave; stated against part (b)'s 0.10);
  - "the field" when the lower bound of D - S is not above 0 AND the lower bound of S is above 0 (fields of one well are
    readable, settled, and fields of two wells are not read detectably more): the unseen-field reading measures the field
    (its look, focus, density), not the well. If in addition S's mean on (iii) is at least 0.10, part (b)'s line
    (chance + 0.10) is at or below what two fields of one well read, and no method that removes only the well can be
    expected to meet it; the upper bound of D - S is stated as the largest well excess the seeds leave room for;
  - "undecided" otherwise (neither S nor D - S settled above 0).
The verdict for part (b) is the reading of the two round-3 networks when they agree (MixStyle is the judged network, its
baseline the same training without it); when they disagree both are reported and no verdict is drawn. The pixel reference
says what the pixels alone give and changes no verdict.
"""
