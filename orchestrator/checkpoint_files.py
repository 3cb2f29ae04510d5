"""What a reported checkpoint directory holds (names shared by workers and driver, no TF here)."""

WEIGHTS = "weights.h5"            # this epoch's weights, for model.load_weights
BEST_WEIGHTS = "best.weights.h5"  # best weights so far (ModelCheckpoint's file)
TRAIN_STATE = "train_state"       # TF checkpoint of model + optimizer, for resuming
STATE = "state.json"              # epoch, history, early-stopping and best-so-far state
