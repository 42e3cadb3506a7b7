"""A literal loop transcription of Zhang (2016), one sample at a time, in Python floats (float64).

The test oracle for `pipeline.model.cnn`: no NumPy arithmetic, no vectorisation, the paper's index
conventions. Arrays are nested lists; paper index i = 1..n is list index i-1, kernel index
u = -2..2 is list index u+2. Convolution outputs are 'valid': output (i, j) sits at the input
position (i+2, j+2), so eq. (5)'s I(i-u, j-v) is I[i+2-u][j+2-v] with 0-based i, j.
"""

# ruff: noqa: E741  (I is the paper's name for the input image)

from __future__ import annotations

import math

R = range(-2, 3)  # u, v = -2..2


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))  # eq. (4)


def zeros(*shape: int) -> list:
    if len(shape) == 1:
        return [0.0] * shape[0]
    return [zeros(*shape[1:]) for _ in range(shape[0])]


def forward(P: dict, I: list) -> dict:
    """Eqs. (5), (6), (8), (9), (10), (12), (13) for one 28x28 image I (nested lists)."""
    k1, b1, k2, b2, W, b = P["k1"], P["b1"], P["k2"], P["b2"], P["W"], P["b"]
    C1 = zeros(6, 24, 24)
    for p in range(6):
        for i in range(24):
            for j in range(24):
                acc = 0.0
                for u in R:
                    for v in R:
                        acc += I[i + 2 - u][j + 2 - v] * k1[0][p][u + 2][v + 2]
                C1[p][i][j] = sigma(acc + b1[p])  # eq. (5)
    S1 = zeros(6, 12, 12)
    for p in range(6):
        for i in range(1, 13):
            for j in range(1, 13):
                acc = 0.0
                for u in (0, 1):
                    for v in (0, 1):
                        acc += C1[p][2 * i - u - 1][2 * j - v - 1]
                S1[p][i - 1][j - 1] = acc / 4  # eq. (6)
    C2 = zeros(12, 8, 8)
    for q in range(12):
        for i in range(8):
            for j in range(8):
                acc = 0.0
                for p in range(6):
                    for u in R:
                        for v in R:
                            acc += S1[p][i + 2 - u][j + 2 - v] * k2[p][q][u + 2][v + 2]
                C2[q][i][j] = sigma(acc + b2[q])  # eq. (8)
    S2 = zeros(12, 4, 4)
    for q in range(12):
        for i in range(1, 5):
            for j in range(1, 5):
                acc = 0.0
                for u in (0, 1):
                    for v in (0, 1):
                        acc += C2[q][2 * i - u - 1][2 * j - v - 1]
                S2[q][i - 1][j - 1] = acc / 4  # eq. (9)
    f = F(S2)  # eq. (10)
    yhat = [sigma(sum(W[i][j] * f[j] for j in range(192)) + b[i]) for i in range(10)]  # eq. (12)
    return {"C1": C1, "S1": S1, "C2": C2, "S2": S2, "f": f, "yhat": yhat}


def F(S: list) -> list:
    """Eq. (10): each 4x4 map scanned column by column, the 12 maps concatenated in order."""
    return [S[q][i][j] for q in range(len(S)) for j in range(4) for i in range(4)]


def F_inv(f: list) -> list:
    """Eqs. (11), (31)."""
    S = zeros(12, 4, 4)
    for q in range(12):
        for j in range(4):
            for i in range(4):
                S[q][i][j] = f[q * 16 + j * 4 + i]
    return S


def loss(yhat: list, y: list) -> float:
    return 0.5 * sum((yhat[i] - y[i]) ** 2 for i in range(10))  # eq. (13)


def backward(P: dict, I: list, fw: dict, y: list) -> dict:
    """Eqs. (19), (24), (30)-(32), (36)-(40), (45), (49)-(52), (56)-(59), (64) for one sample."""
    k2, W = P["k2"], P["W"]
    C1, S1, C2, f, yhat = fw["C1"], fw["S1"], fw["C2"], fw["f"], fw["yhat"]
    dyhat = [(yhat[i] - y[i]) * yhat[i] * (1 - yhat[i]) for i in range(10)]
    dW = [[dyhat[i] * f[j] for j in range(192)] for i in range(10)]  # eq. (19)
    db = list(dyhat)  # eq. (24)
    df = [sum(W[i][j] * dyhat[i] for i in range(10)) for j in range(192)]  # eq. (30)
    dS2 = F_inv(df)  # eq. (31)
    dC2 = zeros(12, 8, 8)
    for q in range(12):
        for i in range(1, 9):
            for j in range(1, 9):
                dC2[q][i - 1][j - 1] = (
                    dS2[q][math.ceil(i / 2) - 1][math.ceil(j / 2) - 1] / 4
                )  # (32)
    dC2s = zeros(12, 8, 8)
    for q in range(12):
        for i in range(8):
            for j in range(8):
                dC2s[q][i][j] = dC2[q][i][j] * C2[q][i][j] * (1 - C2[q][i][j])  # eq. (37)
    dk2 = zeros(6, 12, 5, 5)
    for p in range(6):
        for q in range(12):
            for u in R:
                for v in R:
                    acc = 0.0
                    for i in range(8):
                        for j in range(8):
                            acc += S1[p][i + 2 - u][j + 2 - v] * dC2s[q][i][j]  # eqs. (36), (39)
                    dk2[p][q][u + 2][v + 2] = acc
    db2 = [sum(dC2s[q][i][j] for i in range(8) for j in range(8)) for q in range(12)]  # eq. (45)
    dS1 = zeros(6, 12, 12)
    for p in range(6):
        for i in range(12):
            for j in range(12):
                acc = 0.0
                for q in range(12):
                    for u in R:
                        for v in R:
                            ci, cj = i + u - 2, j + v - 2  # C2 index of S1 position (i+u, j+v)
                            if 0 <= ci < 8 and 0 <= cj < 8:
                                acc += dC2s[q][ci][cj] * k2[p][q][u + 2][v + 2]  # eq. (49)
                dS1[p][i][j] = acc
    dC1s = zeros(6, 24, 24)
    for p in range(6):
        for i in range(1, 25):
            for j in range(1, 25):
                d = dS1[p][math.ceil(i / 2) - 1][math.ceil(j / 2) - 1] / 4  # eq. (52)
                c = C1[p][i - 1][j - 1]
                dC1s[p][i - 1][j - 1] = d * c * (1 - c)  # eq. (57)
    dk1 = zeros(1, 6, 5, 5)
    for p in range(6):
        for u in R:
            for v in R:
                acc = 0.0
                for i in range(24):
                    for j in range(24):
                        acc += I[i + 2 - u][j + 2 - v] * dC1s[p][i][j]  # eqs. (56), (58)
                dk1[0][p][u + 2][v + 2] = acc
    db1 = [sum(dC1s[p][i][j] for i in range(24) for j in range(24)) for p in range(6)]  # eq. (64)
    return {"k1": dk1, "b1": db1, "k2": dk2, "b2": db2, "W": dW, "b": db}
