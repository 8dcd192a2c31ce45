"""Every built-in model, dataset and task, imported once: their @register_* decorators fill the registry.

The registry (on the ground floor) loads this module by name on its first lookup, so the CLI, the listings and
config validation see the whole zoo, while importing one module (the Trainer, a model file) loads nothing else.
A new model, dataset or task file is added to its list here, and `python scripts/docs/catalog_index.py` rerun: a
lookup of one built-in name imports only its module, found in `dlforge.catalog_index`.
"""

# datasets
import dlforge.data.canvases  # noqa: F401  fashion_canvases
import dlforge.data.chartext  # noqa: F401  shakespeare_char, text_files
import dlforge.data.coco  # noqa: F401  coco
import dlforge.data.genre  # noqa: F401  shakespeare_genre
import dlforge.data.images  # noqa: F401  fashion_mnist, idx, digits, image_folder
import dlforge.data.masked_lm  # noqa: F401  shakespeare_mlm, text_files_mlm
import dlforge.data.sft  # noqa: F401  sft_jsonl
import dlforge.data.tabular  # noqa: F401  iris, wine, breast_cancer, diabetes, affairs, csv, parquet
import dlforge.data.timeseries  # noqa: F401  co2, sunspots, seattle_temps, timeseries_csv
import dlforge.data.tokens  # noqa: F401  lm_text, token_shards
import dlforge.data.translation  # noqa: F401  bible_translation
import dlforge.data.voc  # noqa: F401  voc_masks
import dlforge.data.weather_sequences  # noqa: F401  seattle_weather

# models
import dlforge.models.alexnet  # noqa: F401
import dlforge.models.autoencoder  # noqa: F401  autoencoder, conv_autoencoder
import dlforge.models.bert  # noqa: F401
import dlforge.models.char_rnn  # noqa: F401
import dlforge.models.dcgan  # noqa: F401  dcgan, dcgan_sn
import dlforge.models.diffusion  # noqa: F401  ddpm_unet, ddpm_unet_cond
import dlforge.models.efficientnet  # noqa: F401
import dlforge.models.fcos  # noqa: F401
import dlforge.models.fcos_mask  # noqa: F401
import dlforge.models.googlenet  # noqa: F401
import dlforge.models.gpt  # noqa: F401
import dlforge.models.lenet  # noqa: F401
import dlforge.models.mlp  # noqa: F401
import dlforge.models.resnet  # noqa: F401
import dlforge.models.rnn  # noqa: F401
import dlforge.models.seq2seq  # noqa: F401
import dlforge.models.simple_cnn  # noqa: F401
import dlforge.models.unet  # noqa: F401
import dlforge.models.vae  # noqa: F401  vae, conv_vae
import dlforge.models.vgg  # noqa: F401
import dlforge.models.vit  # noqa: F401

# tasks (a dataset's info["task"] names one)
import dlforge.tasks.classification  # noqa: F401
import dlforge.tasks.detection  # noqa: F401  detection, instance_segmentation
import dlforge.tasks.forecast  # noqa: F401
import dlforge.tasks.generation  # noqa: F401
import dlforge.tasks.language_modeling  # noqa: F401
import dlforge.tasks.masked_lm  # noqa: F401
import dlforge.tasks.regression  # noqa: F401
import dlforge.tasks.segmentation  # noqa: F401
import dlforge.tasks.translation  # noqa: F401
