"""score-folder's settings, without Spark: it computes only the features its models read."""
from __future__ import annotations

import pytest

from hitpredict.config import load_config
from hitpredict.scoring.registry import ResolvedModel
from hitpredict.stages import score_folder


def _model(family: str) -> ResolvedModel:
    audio = {"sample_rate": 22050, "clip_seconds": 30.0, "n_fft": 2048, "hop_length": 512, "n_mels": 128,
             "min_seconds": 5.0}
    return ResolvedModel(name=f"m-{family}", version="1", bundle_dir="/nowhere", target="popular", family=family,
                         audio=audio)


@pytest.mark.parametrize("families, embedding", [(["crnn"], False), (["cnn", "inception"], False),
                                                 (["crnn", "embed"], True), (["fusion"], True)])
def test_score_folder_computes_the_embedding_only_for_models_that_read_it(families, embedding):
    config = load_config(None, ["embedding.enabled=true", "audio.clip_seconds=10"], environ={})
    folder = score_folder.model_audio_config(config, [_model(f) for f in families])
    assert folder.embedding.active is embedding
    assert folder.audio.clip_seconds == 30.0 and folder.ingest.source == "folder"
    assert folder.embedding.model_copy(update={"enabled": True}) == config.embedding   # nothing else changed
