"""`r1 data`: look at a dataset before spending CPU-hours on it, clean it, convert it.

  source.py    ROOT_OR_CONFIG -> a `Source` (kind + where), folder layouts detected
  scan.py      image / annotation records of a source: sizes, hashes, readability
  inspect.py   findings + statistics for images and text (`r1 data inspect`); duplicates by the rule in
               r1/data/imagehash.py, which grouped splits use too
  report.py    data_report.md / .json / PNG histograms and the terminal table
  clean.py     cleaned copies (`r1 data clean`), never touching the source
  convert.py   VOC <-> COCO-JSON (`r1 data convert`)
  balance.py   `data.balance=sampler|loss` for classification (a trainer callback)
"""
