"""Keras callbacks made safe under MultiWorkerMirroredStrategy, one concept per file.

Every worker gets the same callbacks that steer training (schedule, early
stopping, reporting), built from the same spec: a worker that stopped one epoch
before the others would leave them waiting in the next all-reduce forever.
TensorBoard, which only writes files, runs on the chief alone. The best-weights
ModelCheckpoint runs on every worker, because saving reads metric variables
that all-reduce across workers; Keras sends non-chief copies to a temporary
directory and deletes them.
"""
