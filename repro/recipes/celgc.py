"""P1 -- CELGC: clipped SGD x -= min(eta, gamma/||g||) g on N workers, models averaged every I steps.

Sources: the paper's text, and the authors' code MingruiLiu-ML-Lab/Communication-Efficient-Local-Gradient-Clipping
(`nlp/main_lstm.py` defaults, `nlp/scripts/{PTB,WT}_GPUrun_0.sh`, `cifar10/scripts/GPUrun_*.sh`). Where they differ,
README.md ("Presets of the language-model tasks") and docs/celgc-cifar.md say how.
"""
from repro.recipes import P1, Recipe, register

LM_TASKS = ("lstm-ptb", "lstm-wt2")
RESNETS = tuple(f"resnet{d}-cifar10" for d in (20, 32, 44, 56, 110, 218))

# AWD-LSTM as the authors' scripts run it (values shared by PTB and WikiText-2).
AWD_LSTM = dict(
    bptt=70, variable_bptt=True,  # main_lstm.py: seq_len ~ N(70, 5), 35 w.p. 0.05; eta and gamma x seq_len / 70
    emsize=400, nhid=1150, nlayers=3, tied=True,  # main_lstm.py defaults
    dropout=0.4, dropouti=0.4,  # scripts: --dropout 0.4 --dropouti 0.4 (code defaults 0.4 / 0.65)
    dropoute=0.1, wdrop=0.5,  # main_lstm.py defaults
    alpha=2.0, beta=1.0,  # main_lstm.py defaults: AR / TAR
    eval_batch_size=10, test_batch_size=2,  # main_lstm.py: eval_batch_size = 10, test_batch_size = 2
)
LM_OPTIMIZER = dict(
    name="clipped-sgd",
    lr=30.0,  # scripts: --lr 30
    clip=7.5,  # scripts: --clip 7.5 (gamma)
    momentum=0.0,  # main_lstm.py: plain SGD
    weight_decay=1.2e-6,  # main_lstm.py default --wdecay
)
LM_TRAIN = dict(
    machines=8,  # scripts: --world-size 8 (4 GPUs on each of 2 machines)
    average_after_nonmono=5,  # main_lstm.py: NT-ASGD trigger, nonmono = 5
    eval_sync="in-place",  # main_lstm.py averages the workers' models at every epoch end before evaluating
)

register(Recipe(
    name="celgc-ptb-paper", tasks=("lstm-ptb",), preset="paper", source=P1,
    summary="AWD-LSTM on PTB, 8 workers, I = 16 (the authors' PTB script)",
    task=dict(AWD_LSTM,
              batch_size=3,  # PTB_GPUrun_0.sh: --batch_size 3 (per worker)
              dropouth=0.25),  # PTB_GPUrun_0.sh: --dropouth 0.25
    optimizer=LM_OPTIMIZER,
    sync=dict(name="periodic", interval=16),  # paper: I in {2, 4, 8, 16, 32}; 16 its main setting (scripts ship 2)
    train=dict(LM_TRAIN,
               epochs=250,  # PTB_GPUrun_0.sh: --epochs 250
               seed=2020),  # PTB_GPUrun_0.sh: --seed 2020
))

register(Recipe(
    name="celgc-wt2-paper", tasks=("lstm-wt2",), preset="paper", source=P1,
    summary="AWD-LSTM on WikiText-2, 8 workers, I = 16 (the authors' WikiText-2 script)",
    task=dict(AWD_LSTM,
              batch_size=10,  # WT_GPUrun_0.sh: --batch_size 10
              dropouth=0.2),  # WT_GPUrun_0.sh: --dropouth 0.2
    optimizer=LM_OPTIMIZER,
    sync=dict(name="periodic", interval=16),
    train=dict(LM_TRAIN,
               epochs=300,  # WT_GPUrun_0.sh: --epochs 300
               seed=1882),  # WT_GPUrun_0.sh: --seed 1882
))

register(Recipe(
    name="celgc-lm-quick", tasks=(*LM_TASKS, "lstm-text"), preset="quick", source="laptop scale (not from the paper)",
    summary="2x200 tied LSTM, 4 workers, I = 4, 6 epochs",
    task=dict(batch_size=20, bptt=35),  # pytorch/examples word_language_model defaults
    optimizer=dict(name="clipped-sgd",
                   lr=20.0,  # word_language_model: --lr 20
                   clip=5.0),  # word_language_model clips lr-scaled gradients at 0.25: gamma = 20 x 0.25
    sync=dict(name="periodic", interval=4),
    train=dict(epochs=6, machines=4, seed=0),
))

# CIFAR-10. Paper text: ResNet-56, eta 0.3, gamma 1.0, local batch 64, eta and gamma / 10 at epochs 80 and 120,
# 8 machines. Weight decay 5e-4 and momentum 0 from the authors' cifar10 scripts (the paper is silent).
CIFAR_OPTIMIZER = dict(name="clipped-sgd", clip=1.0, momentum=0.0, weight_decay=5e-4)
# scripts: --step-decay-milestones 80 120 --step-decay-factor 0.1. train.py decays after the evaluation numbered
# t // len(loader)/N: fixed epochs in our unit (the training set once, summed over workers), not fractions of the run.
CIFAR_SCHEDULE = dict(name="step", milestones=[80, 120], gamma=0.1)
# scripts: --train-epochs 20 with --world-size 8. main.py gives every worker the whole training set (world_size=1 to
# its loader) and train.py loops 20 times over it, evaluating every len(loader)/8 steps: 20 x 8 = 160 of our epochs
# (at batch 16: 20 x 3125 = 62,500 steps per worker = 160.3 evaluations of 390 steps x 128 images).
CIFAR_EPOCHS = 160

register(Recipe(
    name="celgc-resnet56-paper", tasks=("resnet56-cifar10",), preset="paper", for_optimizers=("clipped-sgd",),
    source=P1, summary="ResNet-56 (BN) on CIFAR-10, 8 workers, I = 16 (paper text)",
    task=dict(bn=True,  # P1's ResNets have BatchNorm
              batch_size=64,  # paper: local batch 64
              score_trainset=True),  # cifar10 train.py: evaluate() on the whole training set, averaged model
    optimizer=dict(CIFAR_OPTIMIZER, lr=0.3),  # paper: eta 0.3, gamma 1.0
    sync=dict(name="periodic", interval=16),
    schedule=CIFAR_SCHEDULE,
    train=dict(epochs=CIFAR_EPOCHS,  # scripts' --train-epochs 20 x 8 workers (the text gives only the milestones)
               machines=8, seed=0),
))

register(Recipe(
    name="celgc-resnet32-scripts", tasks=("resnet32-cifar10",), preset="celgc-scripts", source=P1,
    summary="ResNet-32 (BN) on CIFAR-10 as the authors' scripts run it: eta 0.1, batch 16, I = 2",
    task=dict(bn=True, batch_size=16,  # cifar10/scripts/GPUrun_*.sh: --batch-size 16
              score_trainset=True),  # cifar10 train.py: evaluate() on the whole training set, averaged model
    optimizer=dict(CIFAR_OPTIMIZER, lr=0.1),  # scripts: --lr 0.1 --clip 1.0 --weight-decay 5e-4
    sync=dict(name="periodic", interval=2),  # scripts: --communication-interval 2
    schedule=CIFAR_SCHEDULE,
    train=dict(epochs=CIFAR_EPOCHS, machines=8, seed=0),  # scripts: 8 processes, --train-epochs 20 (= 160 epochs)
))

register(Recipe(
    name="celgc-cifar-quick", tasks=RESNETS, preset="quick", for_optimizers=("clipped-sgd",),
    source="laptop scale (not from the paper)",
    summary="ResNet (BN) on 8,000 CIFAR-10 images, 4 workers x batch 32, eta 0.3, gamma 1, I = 4, 6 epochs",
    task=dict(bn=True,  # SGD at these step sizes diverges without BN
              batch_size=32, train_subset=8000),
    # The paper's text: eta 0.3, gamma 1.0 (weight decay 5e-4 from the scripts). Clipping must fire for the quick
    # runs to test clipping (issue 25, D7): the scripts' eta 0.1 with gamma 1 clips when ||g|| > 10, which never
    # happened (clip_fraction 0 in all 9 earlier runs); at eta 0.3 it clips when ||g|| > 3.3. Pilot, 1 epoch, seed
    # 100: every-step clipped 24 % of its steps, CELGC I=16 (local gradients) 47 % (no threshold was written down
    # before the pilot; the paper's own eta and gamma were taken once they were seen to clip).
    optimizer=dict(CIFAR_OPTIMIZER, lr=0.3),
    sync=dict(name="periodic", interval=4),
    train=dict(epochs=6, machines=4, seed=0),
))
