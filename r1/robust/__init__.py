"""Adversarial robustness for image classifiers: FGSM / PGD attacks in pixel units (`attacks`),
accuracy under attack for `r1 eval --attack` (`evaluate`), adversarial training (`callback`)."""
