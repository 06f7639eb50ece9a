"""The backdoor factory: clean encoders, triggers, attacks and poisoned corpora at CIFAR-10 scale.

Stages (one command each, thin CLIs in jobs/):
  clean SimCLR   jobs/lab_simclr.py --width 0.125          -> lab:simclr-r18@<cache>/simclr-w0.125-<hash>/model.safetensors
  clean CLIP     jobs/lab_clip.py                           -> lab:clip-tiny@<cache>/clip-tiny-<hash>/model.safetensors
  triggers       jobs/lab_trigger.py square|checker|bar|blend|ctrl --out FILE
  attacks        jobs/lab_attack.py badencoder|drupe|ctrl|clip-backdoor|badclip [--trigger FILE] ...
  matrix         jobs/lab_matrix.py --clean SPEC  (each attack over triggers x targets -> results/matrix.json)
  corpora        jobs/lab_corpus.py ATTACK --share 0.05 --out DIR
  results        jobs/lab_report.py  (table of every cached card, plots into results/lab/)
Every trained model is cached by config hash under $DEDE_LAB_CACHE (default ~/.cache/dede-lab) as
model.safetensors + card.json; a second run with the same config trains nothing.
Importing the lab registers its `lab:` encoders with pipeline.encoders.
"""
from pipeline.lab import encoders as _encoders  # noqa: F401 - registers lab:simclr-r18 and lab:clip-tiny
