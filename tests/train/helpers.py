"""What the train tests share."""
import jax
import numpy as np


def bits(tree):
    """Leaves as raw bytes (typed keys as their data): equal bit for bit, NaN payloads included."""
    def raw(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf).tobytes()
    return [raw(leaf) for leaf in jax.tree.leaves(tree)]
