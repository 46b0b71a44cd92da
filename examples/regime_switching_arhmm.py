# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Regime-switching time series with an ARHMM
#
# Real data that ships inside an installed package: matplotlib's sample data
# holds Google's daily share prices from August 2004 to October 2008
# (`goog.npz`; the first output line gives the number of trading days), ending
# in the 2008 crash. We model the daily log return (in percent) as a
# two-state autoregressive HMM with one lag:
#
# $$y_t \mid z_t = k \sim \mathcal N(A_k y_{t-1} + b_k, Q_k).$$
#
# Then we fit it by EM (`arprob.fit_em`), read off the smoothed regime
# probabilities and the Viterbi path, and forecast the days after the sample.

# %%
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib
import matplotlib.cbook

# headless when run as a script (tests, CI) unless MPLBACKEND says otherwise; in a notebook the
# figures show inline (plt.show() below) and are saved as well
if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arprob import ARHMM, fit_em

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

prices = matplotlib.cbook.get_sample_data("goog.npz")["price_data"]
dates = prices["date"][1:]
returns = 100 * np.diff(np.log(prices["adj_close"]))
y = returns[:, None]
print(f"{len(y)} days, {dates[0]} to {dates[-1]}; return sd {returns.std():.2f}%")

# %% [markdown]
# ## Fit
#
# We start from a calm state and a volatile state that differ only in their
# covariance. We run EM with three random restarts and keep the best
# likelihood. Every iteration of every restart is monotone (theorem 12).

# %%
start = ARHMM(np.array([0.5, 0.5]), np.array([[0.97, 0.03], [0.05, 0.95]]),
              np.zeros((2, 1, 1, 1)), np.zeros((2, 1)),
              np.array([[[0.5]], [[2.0]]]) * returns.var(), num_lags=1)
model, log_likelihoods = fit_em(start, y, max_iters=200, tol=1e-8, num_restarts=3, key=jax.random.key(0))
assert np.all(np.diff(log_likelihoods) >= -1e-10 * np.abs(log_likelihoods[:-1]))
calm = int(np.argmin(np.asarray(model.covariances)[:, 0, 0]))
volatile = 1 - calm
sd = np.sqrt(np.asarray(model.covariances)[:, 0, 0])
print(f"log-likelihood {log_likelihoods[0]:.1f} -> {log_likelihoods[-1]:.1f} in {len(log_likelihoods) - 1} iterations")
print(f"return sd: calm {sd[calm]:.2f}%, volatile {sd[volatile]:.2f}%")
stay = np.diagonal(np.asarray(model.transition_probs))
print(f"expected regime durations: calm {1 / (1 - stay[calm]):.0f} days, volatile {1 / (1 - stay[volatile]):.0f} days")

# %% [markdown]
# ## Regimes
#
# The smoothed probability of the volatile regime, $p(z_t = \text{volatile} \mid y)$,
# comes from the forward-backward kernels. The Viterbi path is the single most
# likely sequence of regimes. On this data, the fit finds a calm regime and a
# volatile one; their daily standard deviations and expected durations are
# printed under the fit above. The line below gives the share of days in the
# volatile regime, over the whole sample and from September 2008 on.

# %%
smoothed = np.asarray(model.smooth(y).smoothed_probs)[:, volatile]
path, _ = model.viterbi(y)
path = np.asarray(path)
crash = dates[1:] >= np.datetime64("2008-09-01")
print(f"days in the volatile regime (Viterbi): {np.mean(path == volatile):.0%} overall, "
      f"{np.mean(path[crash] == volatile):.0%} from September 2008")

figure, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
axes[0].plot(dates, returns, lw=0.6, color="black")
axes[0].set_ylabel("daily log return (%)")
axes[1].plot(dates[1:], smoothed, lw=0.8, label="p(volatile | all data)")
axes[1].fill_between(dates[1:], 0, (path == volatile).astype(float), alpha=0.2, step="mid", label="Viterbi")
axes[1].set_ylabel("volatile regime")
axes[1].legend(loc="upper left")
figure.tight_layout()
figure.savefig(FIGURES / "regime_switching_arhmm.png", dpi=90)
plt.show()
plt.close(figure)

# %% [markdown]
# ## Forecast
#
# The first forecast step is an exact Gaussian mixture over the filtered
# regime. Later steps come from simulated paths. The filtered probability of
# the volatile regime on the last day (printed below) sets how wide the
# predictive band is.

# %%
filtered = np.asarray(model.filter(y).filtered_probs)[-1]
forecast = model.forecast(jax.random.key(1), y[-1:], horizon=20, num_samples=4000,
                          state_probs=filtered @ np.asarray(model.transition_probs))
band = 1.96 * np.sqrt(np.asarray(forecast.covariance)[:, 0, 0])
print(f"p(volatile | data up to {dates[-1]}) = {filtered[volatile]:.3f}")
print(f"one-day-ahead return: mean {float(forecast.mean[0, 0]):+.2f}%, 95% band ±{band[0]:.2f}% "
      f"(±{1.96 * sd[calm]:.2f}% in the calm regime, ±{1.96 * sd[volatile]:.2f}% in the volatile one)")
figure, axis = plt.subplots(figsize=(7, 3))
steps = np.arange(1, 21)
axis.plot(steps, np.asarray(forecast.mean)[:, 0], color="C0")
axis.fill_between(steps, np.asarray(forecast.mean)[:, 0] - band, np.asarray(forecast.mean)[:, 0] + band,
                  alpha=0.3)
axis.set_xlabel("trading days after 2008-10-14")
axis.set_ylabel("return forecast (%)")
figure.tight_layout()
figure.savefig(FIGURES / "regime_switching_forecast.png", dpi=90)
plt.show()
plt.close(figure)
