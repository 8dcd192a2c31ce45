"""Which module registers each built-in model, dataset and task, and each model's and dataset's config keys.

Written by scripts/docs/catalog_index.py from the loaded zoo; do not edit by hand: rerun the script (a test checks it).
`dlforge.registry` imports the one module a name needs instead of the whole zoo, and `dlforge.config` refuses an
unknown model or data key from here, before torch loads.
"""

MODELS = {  # name: (module, config keys)
    'alexnet_small': ('dlforge.models.alexnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'channels',
        'kernel_sizes', 'stride', 'padding', 'width_mult', 'pool', 'pool_kernel', 'pool_stride', 'pool_after', 'hidden',
        'dropout'
    )),
    'bert_classifier': ('dlforge.models.bert', (
        'vocab_size', 'dim', 'n_layers', 'n_heads', 'ffn_hidden', 'context', 'type_vocab_size', 'norm_eps', 'dropout',
        'attn_dropout', 'head', 'num_classes', 'pooling'
    )),
    'bert_mlm': ('dlforge.models.bert', (
        'vocab_size', 'dim', 'n_layers', 'n_heads', 'ffn_hidden', 'context', 'type_vocab_size', 'norm_eps', 'dropout',
        'attn_dropout', 'head', 'num_classes', 'pooling'
    )),
    'char_gru': ('dlforge.models.char_rnn', (
        'vocab_size', 'cell', 'embed_dim', 'dim', 'n_layers', 'dropout', 'tie_weights', 'loss'
    )),
    'char_lstm': ('dlforge.models.char_rnn', (
        'vocab_size', 'cell', 'embed_dim', 'dim', 'n_layers', 'dropout', 'tie_weights', 'loss'
    )),
    'char_rnn': ('dlforge.models.char_rnn', (
        'vocab_size', 'cell', 'embed_dim', 'dim', 'n_layers', 'dropout', 'tie_weights', 'loss'
    )),
    'efficientnet_b0_small': ('dlforge.models.efficientnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'width_mult',
        'depth_mult', 'resolution', 'stem_stride', 'dropout', 'drop_path'
    )),
    'efficientnet_small_scaled': ('dlforge.models.efficientnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'width_mult',
        'depth_mult', 'resolution', 'stem_stride', 'dropout', 'drop_path'
    )),
    'fcos': ('dlforge.models.fcos', (
        'in_channels', 'num_classes', 'image_size', 'layers', 'width', 'stem', 'strides', 'level_bounds', 'dim',
        'head_convs', 'center_radius', 'score_threshold', 'nms_iou', 'max_detections', 'dropout'
    )),
    'fcos_mask': ('dlforge.models.fcos_mask', (
        'in_channels', 'num_classes', 'image_size', 'layers', 'width', 'stem', 'strides', 'level_bounds', 'dim',
        'head_convs', 'center_radius', 'score_threshold', 'nms_iou', 'max_detections', 'dropout', 'mask_stride',
        'mask_size', 'mask_convs', 'jitter'
    )),
    'googlenet_small': ('dlforge.models.googlenet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'blocks', 'width_mult',
        'factorize_5x5', 'dropout'
    )),
    'gpt': ('dlforge.models.gpt', (
        'vocab_size', 'context', 'dim', 'n_layers', 'n_heads', 'positions', 'norm', 'norm_eps', 'ffn', 'ffn_hidden',
        'act', 'bias', 'tie_weights', 'dropout'
    )),
    'gpt2': ('dlforge.models.gpt', (
        'vocab_size', 'context', 'dim', 'n_layers', 'n_heads', 'positions', 'norm', 'norm_eps', 'ffn', 'ffn_hidden',
        'act', 'bias', 'tie_weights', 'dropout'
    )),
    'gpt_rope': ('dlforge.models.gpt', (
        'vocab_size', 'context', 'dim', 'n_layers', 'n_heads', 'positions', 'norm', 'norm_eps', 'ffn', 'ffn_hidden',
        'act', 'bias', 'tie_weights', 'dropout'
    )),
    'gru_classifier': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'num_classes', 'loss', 'label_smoothing',
        'class_weights'
    )),
    'gru_forecaster': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'horizon', 'num_targets', 'residual',
        'loss', 'huber_delta'
    )),
    'lenet5': ('dlforge.models.lenet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'channels', 'hidden',
        'kernel_size', 'padding', 'act', 'pool', 'dropout'
    )),
    'linear_regression': ('dlforge.models.mlp', (
        'in_features', 'out_features', 'hidden', 'act', 'norm', 'dropout', 'bias', 'loss', 'label_smoothing',
        'class_weights', 'huber_delta'
    )),
    'logistic_regression': ('dlforge.models.mlp', (
        'in_features', 'out_features', 'hidden', 'act', 'norm', 'dropout', 'bias', 'loss', 'label_smoothing',
        'class_weights', 'huber_delta'
    )),
    'lstm_classifier': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'num_classes', 'loss', 'label_smoothing',
        'class_weights'
    )),
    'lstm_forecaster': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'horizon', 'num_targets', 'residual',
        'loss', 'huber_delta'
    )),
    'minilm_l6': ('dlforge.models.bert', (
        'vocab_size', 'dim', 'n_layers', 'n_heads', 'ffn_hidden', 'context', 'type_vocab_size', 'norm_eps', 'dropout',
        'attn_dropout', 'head', 'num_classes', 'pooling'
    )),
    'mlp': ('dlforge.models.mlp', (
        'in_features', 'out_features', 'hidden', 'act', 'norm', 'dropout', 'bias', 'loss', 'label_smoothing',
        'class_weights', 'huber_delta'
    )),
    'perceptron': ('dlforge.models.mlp', (
        'in_features', 'out_features', 'hidden', 'act', 'norm', 'dropout', 'bias', 'loss', 'label_smoothing',
        'class_weights', 'huber_delta'
    )),
    'resnet18': ('dlforge.models.resnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'block', 'layers',
        'width', 'widths', 'stem', 'zero_init_residual', 'dropout'
    )),
    'resnet20': ('dlforge.models.resnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'block', 'layers',
        'width', 'widths', 'stem', 'zero_init_residual', 'dropout'
    )),
    'resnet34': ('dlforge.models.resnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'block', 'layers',
        'width', 'widths', 'stem', 'zero_init_residual', 'dropout'
    )),
    'resnet50': ('dlforge.models.resnet', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'block', 'layers',
        'width', 'widths', 'stem', 'zero_init_residual', 'dropout'
    )),
    'rnn_classifier': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'num_classes', 'loss', 'label_smoothing',
        'class_weights'
    )),
    'rnn_forecaster': ('dlforge.models.rnn', (
        'in_features', 'cell', 'dim', 'n_layers', 'bidirectional', 'dropout', 'horizon', 'num_targets', 'residual',
        'loss', 'huber_delta'
    )),
    'simple_cnn': ('dlforge.models.simple_cnn', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'channels',
        'convs_per_block', 'kernel_size', 'padding', 'pool', 'pools', 'act', 'batchnorm', 'dropout'
    )),
    'transformer_base': ('dlforge.models.seq2seq', (
        'vocab_size', 'target_vocab_size', 'bos_id', 'eos_id', 'dim', 'n_heads', 'encoder_layers', 'decoder_layers',
        'ffn_hidden', 'act', 'norm_first', 'dropout', 'attn_dropout', 'context', 'label_smoothing'
    )),
    'transformer_seq2seq': ('dlforge.models.seq2seq', (
        'vocab_size', 'target_vocab_size', 'bos_id', 'eos_id', 'dim', 'n_heads', 'encoder_layers', 'decoder_layers',
        'ffn_hidden', 'act', 'norm_first', 'dropout', 'attn_dropout', 'context', 'label_smoothing'
    )),
    'vgg11_small': ('dlforge.models.vgg', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'stages', 'kernel_size',
        'padding', 'batchnorm', 'pool', 'pools', 'hidden', 'dropout'
    )),
    'vgg16_small': ('dlforge.models.vgg', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'stages', 'kernel_size',
        'padding', 'batchnorm', 'pool', 'pools', 'hidden', 'dropout'
    )),
    'vit': ('dlforge.models.vit', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'patch_size', 'dim',
        'n_layers', 'n_heads', 'ffn_hidden', 'pool', 'positions', 'dropout', 'drop_path'
    )),
    'vit_tiny': ('dlforge.models.vit', (
        'in_channels', 'num_classes', 'image_size', 'loss', 'label_smoothing', 'class_weights', 'patch_size', 'dim',
        'n_layers', 'n_heads', 'ffn_hidden', 'pool', 'positions', 'dropout', 'drop_path'
    )),
}

DATASETS = {  # name: (module, config keys)
    'affairs': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'bible_translation': ('dlforge.data.translation', (
        'name', 'num_workers', 'limit', 'source', 'target', 'max_words', 'val_books', 'test_books', 'tokenizer',
        'shared_vocab'
    )),
    'breast_cancer': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'co2': ('dlforge.data.timeseries', (
        'name', 'num_workers', 'limit', 'path', 'time_column', 'value_columns', 'target_columns', 'freq', 'fill',
        'window', 'horizon', 'season', 'test_size', 'val_size', 'stride', 'scale', 'max_train'
    )),
    'coco': ('dlforge.data.coco', (
        'name', 'num_workers', 'limit', 'path', 'task', 'image_size', 'channels', 'masks'
    )),
    'csv': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'diabetes': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'digits': ('dlforge.data.images', (
        'name', 'num_workers', 'limit', 'path', 'val_size', 'test_fraction', 'split_seed', 'classes', 'label_fraction',
        'max_train', 'label_names', 'channels', 'image_size', 'ops', 'augment', 'strict'
    )),
    'fashion_canvases': ('dlforge.data.canvases', (
        'name', 'num_workers', 'limit', 'task', 'size', 'items', 'scale', 'max_overlap', 'background', 'textures',
        'n_train', 'n_val', 'n_test', 'seed', 'masks', 'path', 'cache_dir'
    )),
    'fashion_mnist': ('dlforge.data.images', (
        'name', 'num_workers', 'limit', 'path', 'val_size', 'test_fraction', 'split_seed', 'classes', 'label_fraction',
        'max_train', 'label_names', 'channels', 'image_size', 'ops', 'augment', 'strict'
    )),
    'idx': ('dlforge.data.images', (
        'name', 'num_workers', 'limit', 'path', 'val_size', 'test_fraction', 'split_seed', 'classes', 'label_fraction',
        'max_train', 'label_names', 'channels', 'image_size', 'ops', 'augment', 'strict'
    )),
    'image_folder': ('dlforge.data.images', (
        'name', 'num_workers', 'limit', 'path', 'val_size', 'test_fraction', 'split_seed', 'classes', 'label_fraction',
        'max_train', 'label_names', 'channels', 'image_size', 'ops', 'augment', 'strict'
    )),
    'iris': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'lm_text': ('dlforge.data.tokens', (
        'name', 'num_workers', 'limit', 'context', 'stride', 'corpus', 'tokenizer', 'text_field', 'val_fraction',
        'test_fraction'
    )),
    'parquet': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
    'seattle_temps': ('dlforge.data.timeseries', (
        'name', 'num_workers', 'limit', 'path', 'time_column', 'value_columns', 'target_columns', 'freq', 'fill',
        'window', 'horizon', 'season', 'test_size', 'val_size', 'stride', 'scale', 'max_train'
    )),
    'seattle_weather': ('dlforge.data.weather_sequences', (
        'name', 'num_workers', 'limit', 'window', 'test_size', 'val_size', 'stride', 'scale', 'class_weights',
        'max_train'
    )),
    'sft_jsonl': ('dlforge.data.sft', (
        'name', 'num_workers', 'limit', 'path', 'tokenizer', 'chat_template', 'max_length', 'val_fraction'
    )),
    'shakespeare_char': ('dlforge.data.chartext', (
        'name', 'num_workers', 'limit', 'path', 'context', 'stride', 'val_plays', 'test_plays', 'markdown',
        'text_field', 'val_fraction', 'test_fraction'
    )),
    'shakespeare_genre': ('dlforge.data.genre', (
        'name', 'num_workers', 'limit', 'tokenizer', 'max_length', 'passage_words', 'genres', 'val_plays', 'test_plays'
    )),
    'shakespeare_mlm': ('dlforge.data.masked_lm', (
        'name', 'num_workers', 'limit', 'path', 'text_field', 'val_fraction', 'test_fraction', 'tokenizer',
        'max_length', 'mask_prob', 'dynamic_masking', 'mask_seed'
    )),
    'sunspots': ('dlforge.data.timeseries', (
        'name', 'num_workers', 'limit', 'path', 'time_column', 'value_columns', 'target_columns', 'freq', 'fill',
        'window', 'horizon', 'season', 'test_size', 'val_size', 'stride', 'scale', 'max_train'
    )),
    'text_files': ('dlforge.data.chartext', (
        'name', 'num_workers', 'limit', 'path', 'context', 'stride', 'val_plays', 'test_plays', 'markdown',
        'text_field', 'val_fraction', 'test_fraction'
    )),
    'text_files_mlm': ('dlforge.data.masked_lm', (
        'name', 'num_workers', 'limit', 'path', 'text_field', 'val_fraction', 'test_fraction', 'tokenizer',
        'max_length', 'mask_prob', 'dynamic_masking', 'mask_seed'
    )),
    'timeseries_csv': ('dlforge.data.timeseries', (
        'name', 'num_workers', 'limit', 'path', 'time_column', 'value_columns', 'target_columns', 'freq', 'fill',
        'window', 'horizon', 'season', 'test_size', 'val_size', 'stride', 'scale', 'max_train'
    )),
    'token_shards': ('dlforge.data.tokens', (
        'name', 'num_workers', 'limit', 'context', 'stride', 'path', 'verify'
    )),
    'voc_masks': ('dlforge.data.voc', (
        'name', 'num_workers', 'limit', 'path', 'image_size', 'channels'
    )),
    'wine': ('dlforge.data.tabular', (
        'name', 'num_workers', 'limit', 'path', 'target', 'features', 'categorical', 'task', 'target_threshold',
        'val_fraction', 'test_fraction', 'split_seed', 'scale', 'scale_target', 'class_weights'
    )),
}

TASKS = {  # name: module
    'classification': 'dlforge.tasks.classification',
    'detection': 'dlforge.tasks.detection',
    'forecast': 'dlforge.tasks.forecast',
    'instance_segmentation': 'dlforge.tasks.detection',
    'language_modeling': 'dlforge.tasks.language_modeling',
    'masked_lm': 'dlforge.tasks.masked_lm',
    'regression': 'dlforge.tasks.regression',
    'translation': 'dlforge.tasks.translation',
}
