"""Make the large, real checkpoints the benchmark runs on.

Run with the TensorFlow venv (tensorflow 2.21 + tf-keras + transformers 4.57.6):

    python bench/make_checkpoints.py

Writes, under bench/out/ (git-ignored), from default configs with random
weights and no network access:

    gpt2_small/tf_model.h5   TFGPT2LMHeadModel(GPT2Config())       ~500 MB
    bert_base/tf_model.h5    TFBertForMaskedLM(BertConfig())       ~530 MB,
                             stores the 30522x768 word embedding twice

A folder whose tf_model.h5 already exists is skipped.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def build_and_save(name, model_cls, config):
    import tensorflow as tf

    folder = os.path.join(OUT, name)
    target = os.path.join(folder, "tf_model.h5")
    if os.path.exists(target):
        print("%-11s exists, skipped: %s" % (name, target))
        return
    t0 = time.time()
    tf.random.set_seed(0)
    model = model_cls(config)
    # Build every variable by running the model once on dummy ids.
    model(tf.constant([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=tf.int32))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)  # one tf_model.h5 (default shard size 5GB)
    size = os.path.getsize(target)
    print("%-11s %s  %.1f MB  (%.1f s)" % (name, target, size / 1e6, time.time() - t0))


def main():
    import transformers as tr

    print("transformers", tr.__version__, file=sys.stderr)
    build_and_save("gpt2_small", tr.TFGPT2LMHeadModel, tr.GPT2Config())
    build_and_save("bert_base", tr.TFBertForMaskedLM, tr.BertConfig())


if __name__ == "__main__":
    main()
