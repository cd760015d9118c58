"""What every datamodule shares: the train / validation / test loaders built by one ``loader(dataset, train)`` method."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(pl.LightningDataModule):
    """A datamodule with ``train_set`` and ``val_set`` (set in ``setup``) and a ``loader(dataset, train)`` method.

    The test loop reads ``test_set`` when the datamodule has one, else the validation split (the paper's tasks report
    validation numbers)."""

    train_set: Dataset
    val_set: Dataset

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        test_set = getattr(self, "test_set", None)
        return self.loader(self.val_set if test_set is None else test_set, False)


__all__ = ["SplitDataModule"]
