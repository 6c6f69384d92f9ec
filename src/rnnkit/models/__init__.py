"""The five input/output shapes of an RNN, each for any cell configuration.

* one-to-one: :class:`OneToOne`
* one-to-many: :class:`Generator` (conditioning vector -> sequence)
* many-to-one: :class:`SequenceClassifier`, :class:`SequenceRegressor`
* many-to-many, equal lengths: :class:`SequenceTagger` (optional CRF), :class:`Forecaster`
* many-to-many, unequal lengths: :class:`Seq2Seq` (Bahdanau/Luong attention, greedy and beam search),
  :class:`LexicalSeq2Seq` (its output biased by a translation lexicon), :class:`PointerGenerator`
  (copies source tokens, also unknown ones); frames:
  :class:`FrameForecaster` (ConvLSTM encoder-forecaster)

Every model takes a :class:`RecurrentConfig`. This package imports only torch and rnnkit's core.
"""

from rnnkit.models.attention import AdditiveAttention, LuongAttention, masked_softmax
from rnnkit.models.config import RecurrentConfig
from rnnkit.models.crf import LinearChainCRF
from rnnkit.models.decoding import Decoded, beam_search, greedy_search, length_penalty, sample_search
from rnnkit.models.frames import FrameForecaster
from rnnkit.models.many_to_many import Forecaster, SequenceTagger
from rnnkit.models.many_to_one import SequenceClassifier, SequencePooling, SequenceRegressor
from rnnkit.models.one_to_many import Generator
from rnnkit.models.one_to_one import OneToOne
from rnnkit.models.seq2seq import LexicalSeq2Seq, PointerGenerator, Seq2Seq

__all__ = [
    "AdditiveAttention", "Decoded", "Forecaster", "FrameForecaster", "Generator", "LexicalSeq2Seq", "LinearChainCRF",
    "LuongAttention", "OneToOne", "PointerGenerator",
    "RecurrentConfig", "Seq2Seq", "SequenceClassifier", "SequencePooling", "SequenceRegressor", "SequenceTagger",
    "beam_search", "greedy_search", "length_penalty", "masked_softmax", "sample_search",
]
